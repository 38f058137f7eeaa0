"""The ``prune`` step: low-importance filters removed and the change propagated to every consumer (see
:mod:`onnxprune.pruning`), optionally recovered, scheduled and fine-tuned."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import onnx

from onnxprune.api import save
from onnxprune.data import Dataset, load_data
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion
from onnxprune.io import ensure_output_path, write_text_atomic
from onnxprune.metrics import parse_metric
from onnxprune.pass_infra import CheckLevel, Checks
from onnxprune.plan import CHANNEL_MULTIPLE, Align, Allocate, PlanOptions, PruningPlan
from onnxprune.progress import timing
from onnxprune.pruning import PruneResult, prune
from onnxprune.recover import Recover
from onnxprune.schedule import Schedule, ScheduleOptions
from onnxprune.sensitivity_analysis import plan_for_prune
from onnxprune.signals import import_deferred
from onnxprune.steps.base import DataOptions, Step, StepContext, StepResult, option
from onnxprune.steps.inputs import (
    Merged,
    data_from,
    glob_values,
    guard_paths,
    image_preprocess,
    input_spec,
    load_model,
)
from onnxprune.steps.profile import profile_for
from onnxprune.verify import InputSpec

if TYPE_CHECKING:
    from onnxprune.training import FinetuneResult


@dataclass(frozen=True)
class PruneOutcome:
    """A one-shot prune step's library results: the pruning, the fine-tuning after it, the held-out data."""

    pruned: PruneResult
    tuned: Any = None             # FinetuneResult | None
    eval_data: Dataset | None = None


@dataclass(frozen=True)
class PruneStep(DataOptions, Step):
    """What to remove (``ratio``, ``ratio_for``, ``target_flops``, ``global_ranking``, ``plan``, ``sensitivity``),
    how to choose (``criterion``, ``schedule``/``steps``), recovery (``recover`` on ``data``), fine-tuning
    (``finetune_epochs`` on ``finetune_data``), checks (``verify``, ``dump_dir``). ``target`` sets the default
    ``round_to``. ``target_latency`` (and ``align`` latency) plan on the latency table ``latency_table``, or on
    one profiled now on ``target`` with ``threads`` threads (measurements cached in ``cache``).
    Writes ``ctx.output`` (and ``plan_out``, ``ctx.report``)."""

    kind: ClassVar[str] = "prune"
    ratio: float = 0.0
    ratio_for: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    global_ranking: bool = option(False, flag="global")
    target_flops: float | None = None
    target_latency: float | None = None
    latency_table: Path | None = None
    align: str = option(Align.NONE.value, choices=tuple(a.value for a in Align))
    allocate: str = option(Allocate.WEIGHTS.value, choices=tuple(a.value for a in Allocate))
    sensitivity_samples: int = 128
    threads: int = 1
    cache: str | None = None
    min_channels: int = 1
    target: str = option("cpu", choices=tuple(CHANNEL_MULTIPLE))
    round_to: int | None = None
    criterion: str = option(Criterion.L1.value, choices=tuple(c.value for c in Criterion))
    seed: int = 0
    plan: Path | None = None
    sensitivity: Path | None = None
    recover: str = option("none", choices=tuple(r.value for r in Recover))
    schedule: str = option(Schedule.ONESHOT.value, choices=tuple(s.value for s in Schedule))
    steps: int = 4
    metric: str | None = None
    limit: int | None = 256
    eval_data: Path | None = None
    finetune_epochs: float | None = None
    finetune_data: Path | None = None
    plan_out: Path | None = None
    verify: bool = False
    tolerance: float | None = None
    dump_dir: Path | None = None
    input_shape: tuple[str, ...] = ()
    batch: int = 1

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        if (self.finetune_epochs is None) != (self.finetune_data is None):
            raise UsageError("`finetune_epochs` and `finetune_data` go together")
        if self.finetune_epochs is not None and self.finetune_epochs <= 0:
            raise UsageError("`finetune_epochs` must be positive")
        guard_paths(Merged(ctx, self), inputs=("model", "data", "eval_data", "plan", "sensitivity", "finetune_data",
                                               "latency_table"),
                    files=("output", "plan_out", "report"),
                    folders=("dump_dir",))
        ensure_output_path(ctx.output, ctx.model)
        for extra in (self.plan_out, ctx.report):
            if extra is not None:
                ensure_output_path(extra, ctx.model)
        spec = input_spec(self)
        ratio_for = glob_values("`ratio_for`", self.ratio_for, "layer3*=0.5")
        options = PlanOptions(ratio=self.ratio, ratio_for=ratio_for, exclude=tuple(self.exclude),
                              global_ranking=self.global_ranking, target_flops=self.target_flops,
                              min_channels=self.min_channels,
                              round_to=self.round_to if self.round_to is not None else CHANNEL_MULTIPLE[self.target],
                              criterion=Criterion(self.criterion), seed=self.seed,
                              target_latency=self.target_latency, align=Align(self.align),
                              allocate=Allocate(self.allocate), sensitivity_samples=self.sensitivity_samples)
        if self.plan and self.sensitivity:
            raise UsageError("`plan` and `sensitivity` both give a plan: choose one")
        plan = PruningPlan.load(self.plan) if self.plan else plan_for_prune(self.sensitivity) if self.sensitivity else None
        model = load_model(ctx.model)
        checks = Checks(CheckLevel.STRUCTURE if self.verify else CheckLevel.NONE, rel_tol=self.tolerance,
                        inputs=spec, dump_dir=self.dump_dir)
        data = data_from(self, model)
        eval_data = data_from(self, model, "eval_data")
        schedule = ScheduleOptions(Schedule(self.schedule), self.steps, parse_metric(self.metric))
        if self.finetune_epochs and schedule.schedule is not Schedule.ONESHOT:
            if options.needs_latency:
                raise UsageError("`target_latency` and `align` latency plan once: not with prune-retrain cycles")
            return _run_cycles(self, ctx, model, options, spec, data, eval_data)
        if options.needs_latency and plan is not None:
            raise UsageError("`plan` and `sensitivity` give the counts: `target_latency` and `align` latency do not "
                             "apply")
        with timing() as stages:
            table = profile_for(self, model) if options.needs_latency else None
            result = prune(model, options, plan=plan, spec=spec, checks=checks, verify=self.verify,
                           recover_with=Recover(self.recover), data=data, schedule=schedule, eval_data=eval_data,
                           latency=table)
        tuned = _finetune(self, model, result.model, eval_data) if self.finetune_epochs else None
        save(tuned.model if tuned else result.model, ctx.output, source=ctx.model)
        # counts on latency steps were measured to be fast: the multiple rule is for counts planned without them
        slow = [] if options.needs_latency else result.plan.off_multiple(CHANNEL_MULTIPLE[self.target])
        warnings = list(result.report.latency.notes()) if result.report.latency else []
        if slow:
            shown = ", ".join(f"{g} ({k})" for g, k in slow[:4]) + (f" and {len(slow) - 4} more" if len(slow) > 4 else "")
            warnings.append(f"{len(slow)} pruned group(s) keep channel counts that are not "
                            f"multiples of {CHANNEL_MULTIPLE[self.target]}, which ONNX Runtime ({self.target}) runs "
                            f"slowly (depthwise convs most; the model can end up slower than the original): "
                            f"{shown}. `round_to` {CHANNEL_MULTIPLE[self.target]} avoids it.")
        if result.report.quality is None and result.report.groups_pruned:
            warnings.append("no `data`: the pruned model's accuracy is unknown, and without "
                            "recovery it usually collapses; measure it with `data` (or `eval_data`) and recover "
                            "with `recover` lsq `data` CALIB")
        if self.plan_out:
            result.plan.save(self.plan_out)
        report = result.report.to_json()
        report["target"] = self.target
        report["off_multiple"] = [{"group": g, "kept": k} for g, k in slow]
        report["stages"] = stages
        if tuned is not None:
            report["finetune"] = {k: v for k, v in tuned.to_json().items() if k not in ("trained", "frozen")}
        if ctx.report:
            write_text_atomic(ctx.report, json.dumps(report, indent=2) + "\n", ctx.model)
        files = tuple(p for p in (ctx.output, self.plan_out, ctx.report) if p is not None)
        return StepResult(self.kind, Path(ctx.output), report, files, details=PruneOutcome(result, tuned, eval_data),
                          notes=tuple(warnings))


def _training() -> ModuleType:
    """onnxprune.training (imports PyTorch, with signals held: see onnxprune.signals)."""
    try:
        return import_deferred("onnxprune.training")
    except ImportError:
        raise UsageError("`finetune_epochs` needs PyTorch: pip install 'onnxprune[finetune]'") from None


def _finetune(args: PruneStep, original: onnx.ModelProto, pruned: onnx.ModelProto,
              eval_data: Dataset | None) -> FinetuneResult:
    """Distil ``original`` into ``pruned`` on --finetune-data."""
    training = _training()
    train = load_data(args.finetune_data, pruned, image_preprocess(args))
    return training.finetune(pruned, train, teacher=original, eval_data=eval_data,
                             options=training.FinetuneOptions(epochs=args.finetune_epochs,
                                                              metric=parse_metric(args.metric)))


def _run_cycles(args: PruneStep, ctx: StepContext, model: onnx.ModelProto, options: PlanOptions,
                spec: InputSpec, data: Dataset | None, eval_data: Dataset | None) -> StepResult:
    """``--schedule iterative|layerwise --finetune-epochs N``: prune-retrain cycles (onnxprune.training.cycles)."""
    layerwise = Schedule(args.schedule) is Schedule.LAYERWISE
    if layerwise and data is None:
        raise UsageError("`schedule` layerwise orders groups by their measured sensitivity: it needs `data`")
    for flag, value in (("`plan`", args.plan), ("`sensitivity`", args.sensitivity), ("`plan_out`", args.plan_out),
                        ("`verify`", args.verify), ("`dump_dir`", args.dump_dir)):
        if value:
            raise UsageError(f"{flag} does not apply to prune-retrain cycles (each round plans on the model the "
                             f"previous round fine-tuned)")
    training = _training()
    cycles = import_deferred("onnxprune.training.cycles")
    train = load_data(args.finetune_data, model, image_preprocess(args))
    tune = training.FinetuneOptions(epochs=args.finetune_epochs, metric=parse_metric(args.metric))
    if layerwise:
        assert data is not None
        result = cycles.layerwise_finetune_cycles(
            model, options, rounds=args.steps, train=train, data=data, spec=spec, recover_with=Recover(args.recover),
            eval_data=eval_data, finetune_options=tune, metric=parse_metric(args.metric))
    else:
        result = cycles.prune_finetune_cycles(
            model, options, rounds=args.steps, train=train, spec=spec, recover_with=Recover(args.recover), data=data,
            eval_data=eval_data, finetune_options=tune)
    save(result.model, ctx.output, source=ctx.model)
    report = {"input": str(ctx.model), "output": str(ctx.output), "schedule": args.schedule,
              "rounds": result.to_json()}
    if layerwise:
        report["order"] = [{"group": g, "loss": v} for g, v in result.order]
        report["left_whole"] = list(result.skipped)
    if ctx.report:
        write_text_atomic(ctx.report, json.dumps(report, indent=2) + "\n", ctx.model)
    files = tuple(p for p in (ctx.output, ctx.report) if p is not None)
    return StepResult(args.kind, Path(ctx.output), report, files, details=result)
