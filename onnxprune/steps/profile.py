"""The ``profile`` step: the model's latency table, measured on this machine (see :mod:`onnxprune.latency`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from onnxprune.errors import UsageError
from onnxprune.io import ensure_output_path
from onnxprune.latency.profile import profile_model
from onnxprune.latency.table import LatencyTable, MeasurementCache, default_cache_dir
from onnxprune.steps.base import Step, StepContext, StepResult, option
from onnxprune.steps.inputs import Merged, guard_paths, input_spec, load_model
from onnxprune.targets import TARGETS, runtime_target


def measurement_cache(cache: str | None) -> MeasurementCache:
    """``cache``: a folder, ``none`` (in memory only), or None for the default folder."""
    if cache == "none":
        return MeasurementCache(None)
    return MeasurementCache(Path(cache) if cache else default_cache_dir())


def profile_for(step: object, model: onnx.ModelProto) -> LatencyTable:
    """The latency table a step asks for: read from ``latency_table``, or profiled now on ``target`` with
    ``threads`` (``none`` profiles the CPU) and the step's input shapes."""
    table = getattr(step, "latency_table", None)
    if table is not None:
        return LatencyTable.load(table)
    target = getattr(step, "target", "cpu")
    threads = getattr(step, "threads", 1)
    if threads < 1:
        raise UsageError(f"`threads` {threads} must be >= 1")
    return profile_model(model, runtime_target("cpu" if target == "none" else target), threads, input_spec(step),
                         measurement_cache(getattr(step, "cache", None)))


@dataclass(frozen=True)
class ProfileStep(Step):
    """Measure each prunable layer's latency against its kept channel count on ``target`` with ``threads``
    intra-op threads, calibrated on the whole model; write the table to ``ctx.output``. Measurements are cached
    in ``cache`` (a folder; ``none``: not kept; default ``$ONNXPRUNE_CACHE_DIR`` or ``~/.cache/onnxprune``)."""

    kind: ClassVar[str] = "profile"
    target: str = option("cpu", choices=tuple(TARGETS))
    threads: int = 1
    cache: str | None = None
    input_shape: tuple[str, ...] = ()
    batch: int = 1

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        guard_paths(Merged(ctx, self), inputs=("model",), files=("output",))
        ensure_output_path(ctx.output, ctx.model)
        table = profile_for(self, load_model(ctx.model))
        table.save(ctx.output, ctx.model)
        report = {"input": str(ctx.model), "output": str(ctx.output), "target": table.target,
                  "threads": table.environment.threads, "model_ms": table.model_ms, "layers": len(table.layers),
                  "measured": table.measured, "cached": table.cached, "seconds": round(table.seconds, 2),
                  "input_shapes": {k: list(v) for k, v in table.input_shapes.items()}}
        return StepResult(self.kind, None, report, (Path(ctx.output),), details=table, notes=table.notes)
