"""The ``compress`` step: Deep Compression into an ``.onnxz`` container (see :mod:`onnxprune.compression`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from onnxprune.api import save
from onnxprune.compression.kmeans import Init
from onnxprune.compression.layer_sparsity import (
    DEFAULT_GRID,
    layer_curves,
    sparsity_for,
    weighted_sparsity,
)
from onnxprune.compression.pipeline import (
    CompressOptions,
    CompressResult,
    Retrainer,
    Sharing,
    compress,
    decompress,
)
from onnxprune.compression.runnable import runnable
from onnxprune.data import load_data
from onnxprune.errors import UsageError
from onnxprune.io import ensure_output_path, write_bytes_atomic, write_text_atomic
from onnxprune.metrics import default_metric, loss, metrics, outputs, parse_metric
from onnxprune.passes.prune_connections import ConnectionPruning, scaled
from onnxprune.progress import stage, timing
from onnxprune.recover import Recover
from onnxprune.signals import import_deferred
from onnxprune.steps.base import DataOptions, Step, StepContext, StepResult, option
from onnxprune.steps.inputs import (
    Merged,
    data_from,
    glob_values,
    guard_paths,
    image_preprocess,
    load_model,
)


@dataclass(frozen=True)
class CompressStep(DataOptions, Step):
    """Prune connections (``quality``, ``sparsity`` [``global_sparsity``], ``sparsity_for``, or per-layer from
    ``tolerance``), refit (``recover``, default lsq with data), share (``conv_bits``...) and code into
    ``ctx.output``; ``max_drop`` backs the sparsity off until the metric holds; ``finetune_epochs`` retrains
    (``finetune_data``, ``teacher``, ``prune_steps``); ``runnable`` also writes an ONNX file ORT runs."""

    kind: ClassVar[str] = "compress"
    quality: float | None = None
    sparsity: float | None = None
    global_sparsity: bool = option(False, flag="global")
    sparsity_for: tuple[str, ...] = ()
    tolerance: float | None = None
    max_drop: float | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    conv_bits: int = 8
    fc_bits: int = 5
    conv_index_bits: int = 8
    fc_index_bits: int = 5
    init: str = option("linear", choices=tuple(i.value for i in Init))
    no_sharing: bool = False
    limit: int | None = 512
    eval_data: Path | None = None
    metric: str | None = None
    runnable: Path | None = None
    recover: str | None = option(None, choices=tuple(r.value for r in Recover))
    finetune_epochs: float | None = None
    finetune_data: Path | None = None
    teacher: Path | None = None
    prune_steps: int = 1
    no_fold: bool = False

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        if (self.finetune_epochs is None) != (self.finetune_data is None):
            raise UsageError("`finetune_epochs` and `finetune_data` go together")
        if self.teacher is not None and self.finetune_epochs is None:
            raise UsageError("`teacher` is for `finetune_epochs`")
        if self.finetune_epochs is not None and self.finetune_epochs <= 0:
            raise UsageError("`finetune_epochs` must be positive")
        if self.prune_steps != 1 and self.finetune_epochs is None:
            raise UsageError("`prune_steps` is for `finetune_epochs` (pruning steps each followed by retraining)")
        guard_paths(Merged(ctx, self), inputs=("model", "data", "eval_data", "finetune_data", "teacher"),
                    files=("output", "runnable", "report"))
        for path in (ctx.output, self.runnable, ctx.report):
            if path is not None:
                ensure_output_path(path, ctx.model)
        model = load_model(ctx.model)
        data = data_from(self, model)
        metric = parse_metric(self.metric)
        per_layer = glob_values("`sparsity_for`", self.sparsity_for, "/features*=0.8")
        notes = []
        sharing = Sharing(not self.no_sharing, self.conv_bits, self.fc_bits, self.conv_index_bits, self.fc_index_bits,
                          Init(self.init))
        explicit = self.quality is not None or self.sparsity is not None or self.sparsity_for or self.tolerance is not None
        tolerance, max_drop = self.tolerance, self.max_drop
        if data is not None and not explicit:
            tolerance, max_drop = DEFAULT_TOLERANCE, DEFAULT_MAX_DROP if max_drop is None else max_drop
            notes.append(f"defaults with `data`: `tolerance` {tolerance} `max_drop` {max_drop}")
        if max_drop is not None and (data is None or max_drop < 0):
            raise UsageError("`max_drop` needs `data` (and POINTS >= 0)" if data is None else
                             f"`max_drop` {max_drop}: expected points >= 0")
        with timing() as stages:
            folded_model = model
            recover = Recover(self.recover or ("lsq" if data is not None else "none"))
            if recover is not Recover.NONE and data is None:
                raise UsageError(f"`recover` {recover.value} needs calibration data (`data`)")
            if tolerance is not None:
                if data is None:
                    raise UsageError("`tolerance` measures each layer's sensitivity: it needs `data`")
                if not self.no_fold:
                    import onnxprune

                    folded_model = onnxprune.fold(model).model
                metric, curves = layer_curves(folded_model, data, metric, DEFAULT_GRID, recover)
                per_layer = per_layer + sparsity_for(curves, tolerance)
                notes.append(f"sensitivity ({metric.value}, tolerance {tolerance}): {weighted_sparsity(curves, per_layer[-len(curves):]):.1%} of coded weights pruned")
            pruning = ConnectionPruning(self.quality, self.sparsity, self.global_sparsity, per_layer, tuple(self.include),
                                        tuple(self.exclude))
            eval_data = data_from(self, model, "eval_data") if self.eval_data is not None else data
            reference = outputs(model, eval_data) if eval_data is not None else None
            chosen_metric = (metric or default_metric(eval_data, reference)) if eval_data is not None else None

            retrainer = _retrainer(self, model) if self.finetune_epochs else None

            def attempt(factor: float):
                start = time.perf_counter()
                result = compress(model, CompressOptions(scaled(pruning, factor), sharing, recover,
                                                         fold=not self.no_fold, prune_steps=self.prune_steps),
                                  data, retrainer)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
                restored = decompress(result.container, str(ctx.output))
                decode_seconds = time.perf_counter() - start
                quality = None
                if eval_data is not None:
                    quality = {"original": metrics(reference, reference, eval_data.labels),
                               "compressed": metrics(reference, outputs(restored, eval_data), eval_data.labels)}
                return result, quality, seconds, decode_seconds

            result, quality, seconds, decode_seconds = attempt(1.0)
            if max_drop is not None and pruning.active:
                result, quality, seconds, decode_seconds = _back_off(attempt, (result, quality, seconds, decode_seconds),
                                                                     chosen_metric, max_drop, notes)
        write_bytes_atomic(ctx.output, result.container, ctx.model)
        runnable_bytes = None
        if self.runnable:
            small = runnable(result.container, str(ctx.output))
            save(small, self.runnable, source=ctx.model)
            runnable_bytes = self.runnable.stat().st_size
        report = _report(result, recover, None if self.eval_data is None else str(self.eval_data), quality, seconds, decode_seconds, runnable_bytes, notes)
        report["stages"] = stages
        if ctx.report:
            write_text_atomic(ctx.report, json.dumps(report, indent=2) + "\n", ctx.model)
        files = tuple(p for p in (ctx.output, self.runnable, ctx.report) if p is not None)
        return StepResult(self.kind, None, report, files, details=result)


DEFAULT_TOLERANCE = 0.01
DEFAULT_MAX_DROP = 1.0


def _retrainer(args: CompressStep, model: onnx.ModelProto) -> Retrainer:
    """Deep Compression's retraining from onnxprune.training (PyTorch imported here, signals held)."""
    try:
        retraining = import_deferred("onnxprune.training.deep_compression")
        training = import_deferred("onnxprune.training")
    except ImportError:
        raise UsageError("`finetune_epochs` needs PyTorch: pip install 'onnxprune[finetune]'") from None
    train = load_data(args.finetune_data, model, image_preprocess(args))
    teacher = load_model(args.teacher) if args.teacher else None
    return retraining.DistillRetrainer(train, training.FinetuneOptions(epochs=args.finetune_epochs / 2), teacher)
_BACK_OFF_STEPS = 4


def _drop_points(metric, quality) -> float:
    return 100.0 * loss(metric, quality["original"], quality["compressed"])


def _back_off(attempt, first, metric, max_drop: float, notes: list[str]):
    """Largest sparsity factor in [0, 1] (bisection, :data:`_BACK_OFF_STEPS` tries) whose metric drop on the
    evaluation data is at most ``max_drop`` points; the factor-1 try is ``first``."""
    drop = _drop_points(metric, first[1])
    if drop <= max_drop:
        notes.append(f"`max_drop` {max_drop:g}: {metric.value} drops {drop:.2f} points at full sparsity: kept")
        return first
    with stage("compress: backing off sparsity to meet the accuracy drop allowed", total=_BACK_OFF_STEPS, unit="tries") as s:
        low, high, best = 0.0, 1.0, None
        for _ in range(_BACK_OFF_STEPS):
            mid = (low + high) / 2
            tried = attempt(mid)
            s.advance()
            if _drop_points(metric, tried[1]) <= max_drop:
                low, best = mid, tried
            else:
                high = mid
    if best is None:
        best, low = attempt(0.0), 0.0
    notes.append(f"`max_drop` {max_drop:g}: {metric.value} dropped {drop:.2f} points at full sparsity; every "
                 f"layer's sparsity scaled by {low:.3g} -> {_drop_points(metric, best[1]):.2f} points")
    return best


def _report(result: CompressResult, recover: Recover, eval_data: str | None, quality, seconds: float, decode_seconds: float, runnable_bytes: int | None,
            notes: list[str]) -> dict[str, object]:
    return {"source_bytes": result.source_bytes, "container_bytes": len(result.container), "ratio": result.ratio,
            "weights_ratio": result.weights_ratio(), "runnable_bytes": runnable_bytes,
            "compress_seconds": seconds, "decompress_seconds": decode_seconds, "quality": quality, "notes": notes,
            "recover": recover.value, "eval_data": eval_data, "layers": [{**r.__dict__, "kept": r.kept} for r in result.layers],
            "refit": [f.__dict__ for f in result.fits]}
