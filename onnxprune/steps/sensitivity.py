"""The ``sensitivity`` step: every channel group pruned alone at each ratio, the metric measured on data, and the
plans derived from the curves, written into a folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onnxprune.emission.outdir import check_output_dir, staged_output_dir
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion
from onnxprune.metrics import parse_metric
from onnxprune.progress import stage, timing
from onnxprune.sensitivity_analysis import (
    DEFAULT_RATIOS,
    run_sensitivity,
    target_plan,
    tolerance_plan,
    write_results,
)
from onnxprune.steps.base import (
    DataOptions,
    ShapeOptions,
    Step,
    StepContext,
    StepResult,
    option,
)
from onnxprune.steps.inputs import (
    Merged,
    data_from,
    guard_paths,
    input_spec,
    load_model,
)


@dataclass(frozen=True)
class SensitivityStep(DataOptions, ShapeOptions, Step):
    """``ratios`` (comma-separated, in (0, 1)), ``metric``, ``criterion``; ``tolerance``: the metric loss allowed
    per group for plan_tolerance.json; ``target_flops`` adds plan_target.json; ``force`` replaces the folder."""

    kind: ClassVar[str] = "sensitivity"
    limit: int | None = 512
    force: bool = False
    ratios: str = ",".join(str(r) for r in DEFAULT_RATIOS)
    metric: str | None = None
    criterion: str = option("l1", choices=tuple(c.value for c in Criterion))
    tolerance: float = 0.01
    target_flops: float | None = None
    jobs: int = 1

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        if self.data is None:
            raise UsageError("sensitivity measures each group on data: give `data`")
        try:
            ratios = tuple(float(r) for r in self.ratios.split(","))
            if any(not 0 < r < 1 for r in ratios):
                raise ValueError
        except ValueError:
            raise UsageError(f"`ratios` {self.ratios!r}: expected comma-separated ratios in (0, 1)") from None
        guard_paths(Merged(ctx, self), inputs=("model", "data"), folders=("output",))
        check_output_dir(ctx.output, self.force)
        spec = input_spec(self)
        with staged_output_dir(ctx.output, self.force, "sensitivity") as tmp, timing() as stages:
            with stage("loading the model and data"):
                model = load_model(ctx.model)
                data = data_from(self, model)
                assert data is not None
            result = run_sensitivity(model, data, ratios=ratios, metric=parse_metric(self.metric),
                                     criterion=Criterion(self.criterion), jobs=self.jobs, spec=spec)
            with stage("deriving plans"):
                plans = {"plan_tolerance.json": tolerance_plan(model, result, self.tolerance, data)}
                if self.target_flops:
                    plans["plan_target.json"] = target_plan(model, result, self.target_flops, spec, data)
            for name, plan in plans.items():
                plan.save(tmp / name)
            write_results(tmp, result, stages)
        report = {"groups": len({p.group for p in result.points}), "ratios": list(ratios), "samples": len(data),
                  "metric": result.metric.value, "baseline": result.baseline, "plans": sorted(plans),
                  "output": str(ctx.output)}
        return StepResult(self.kind, None, report, (ctx.output,), details=result)
