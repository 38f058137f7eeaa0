"""Per-group sensitivity analysis (Li et al. 2017, Fig. 2): prune each prunable group alone at each ratio and
measure the metric on data; derive per-group ratios from it.

Derived plans:
- *tolerance*: each group gets the largest ratio whose metric loss is <= ``tolerance``;
- *target*: with ``target_flops``, ratios are raised greedily, always taking the step with the least measured
  loss per MAC saved, until MACs <= target (losses are assumed additive across groups: a prediction).
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from onnxprune.channels import ChannelAnalysis, ChannelGroup, analyze
from onnxprune.data import Dataset
from onnxprune.flops import count_costs
from onnxprune.importance import Criterion, score_groups
from onnxprune.metrics import (
    Metric,
    check_metric,
    default_metric,
    loss,
    metrics,
    outputs,
)
from onnxprune.plan import (
    CostModel,
    GroupPlan,
    PlanOrigin,
    PruningPlan,
    block_multiple,
    round_kept,
    select_units,
)
from onnxprune.progress import stage
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec, resolve_input_shapes

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def single_group_plan(group: ChannelGroup, scores: np.ndarray, ratio: float, round_to: int = 1) -> PruningPlan:
    kept = round_kept(group.channels - int(round(ratio * group.channels)), group.channels, round_to, 1,
                      block_multiple(group))
    return PruningPlan((GroupPlan(group.id, group.channels, select_units(group, scores, kept)),))


@dataclass(frozen=True)
class Point:
    group: str
    ratio: float
    channels_kept: int
    macs_kept: float
    values: dict[str, float]


def _evaluate_group(args: tuple) -> list[Point]:
    model_bytes, group_id, ratios, criterion, seed, data, reference, labels, macs_before, shapes = args
    model = onnx.load_from_string(model_bytes)
    analysis = analyze(model)
    group = analysis.group(group_id)
    scores = score_groups(analysis, Criterion(criterion), seed, data, model)[group_id]
    points = []
    for ratio in ratios:
        plan = single_group_plan(group, scores, ratio)
        result = prune(model, plan=plan)
        macs = count_costs(result.model, shapes).macs
        points.append(Point(group_id, ratio, len(plan.groups[0].keep), macs / macs_before,
                            metrics(reference, outputs(result.model, data), labels)))
    return points


@dataclass(frozen=True)
class SensitivityResult:
    baseline: dict[str, float]
    points: tuple[Point, ...]
    metric: Metric
    criterion: Criterion

    def curve(self, group: str) -> list[Point]:
        return [p for p in self.points if p.group == group]

    def to_json(self) -> dict[str, object]:
        return {"metric": self.metric.value, "criterion": self.criterion.value, "baseline": self.baseline,
                "points": [asdict(p) for p in self.points]}


def run_sensitivity(model: onnx.ModelProto, data: Dataset, *, ratios: tuple[float, ...] = DEFAULT_RATIOS,
                    metric: Metric | None = None, criterion: Criterion = Criterion.L1, jobs: int = 1,
                    seed: int = 0, spec: InputSpec | None = None) -> SensitivityResult:
    reference = outputs(model, data)  # the original model is evaluated once
    metric = metric or default_metric(data, reference)
    check_metric(metric, data, reference)
    baseline = metrics(reference, reference, data.labels)
    analysis = analyze(model)
    shapes = resolve_input_shapes(model, spec or InputSpec())
    macs_before = count_costs(model, shapes).macs
    blob = model.SerializeToString()
    tasks = [(blob, g.id, ratios, criterion.value, seed, data, reference, data.labels, macs_before, shapes)
             for g in analysis.prunable]
    with stage(f"sensitivity: {len(ratios)} ratios on {len(data)} samples", total=len(tasks), unit="groups") as s:
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                results = []
                for task, result in zip(tasks, pool.map(_evaluate_group, tasks)):
                    results.append(result)
                    s.advance(task[1])
        else:
            results = []
            for task in tasks:
                results.append(_evaluate_group(task))
                s.advance(task[1])
    return SensitivityResult(baseline, tuple(p for r in results for p in r), metric, criterion)


def tolerance_plan(model: onnx.ModelProto, result: SensitivityResult, tolerance: float,
                   data: Dataset | None = None) -> PruningPlan:
    """Per group, the largest measured ratio whose loss <= tolerance."""
    ratios = {}
    for group in {p.group for p in result.points}:
        ok = [p.ratio for p in result.curve(group) if loss(result.metric, result.baseline, p.values) <= tolerance]
        ratios[group] = max(ok, default=0.0)
    return _plan_from_ratios(model, ratios, result.criterion, PlanOrigin("sensitivity", tolerance=tolerance, metric=result.metric.value),
                             data)


def target_plan(model: onnx.ModelProto, result: SensitivityResult, target_flops: float,
                spec: InputSpec | None = None, data: Dataset | None = None) -> PruningPlan:
    """Greedy: raise the ratio of the group whose next step costs the least measured loss per MAC saved."""
    analysis = analyze(model)
    cost = CostModel(analysis, count_costs(model, resolve_input_shapes(model, spec or InputSpec())))
    scores = score_groups(analysis, result.criterion, 0, data, model)
    curves = {g: sorted(result.curve(g), key=lambda p: p.ratio) for g in {p.group for p in result.points}}
    level = {g: -1 for g in curves}  # index into the curve; -1 = unpruned

    def macs(levels: dict[str, int]) -> int:
        removed = np.zeros(len(analysis.roots), dtype=bool)
        for g, i in levels.items():
            if i >= 0:
                group = analysis.group(g)
                keep = set(single_group_plan(group, scores[g], curves[g][i].ratio).groups[0].keep)
                removed[group.units[[k for k in range(group.channels) if k not in keep]]] = True
        return cost.macs(removed)

    current = macs(level)
    while current > target_flops * cost.total:
        best = None
        for g, i in level.items():
            if i + 1 >= len(curves[g]):
                continue
            step_loss = loss(result.metric, result.baseline, curves[g][i + 1].values) - (
                loss(result.metric, result.baseline, curves[g][i].values) if i >= 0 else 0.0)
            trial = dict(level, **{g: i + 1})
            saved = current - macs(trial)
            if saved > 0 and (best is None or max(step_loss, 0) / saved < best[0]):
                best = (max(step_loss, 0) / saved, g)
        if best is None:
            break
        level[best[1]] += 1
        current = macs(level)
    ratios = {g: curves[g][i].ratio for g, i in level.items() if i >= 0}
    return _plan_from_ratios(model, ratios, result.criterion,
                             PlanOrigin("sensitivity", target_flops=target_flops, metric=result.metric.value), data)


def _plan_from_ratios(model: onnx.ModelProto, ratios: dict[str, float], criterion: Criterion,
                      origin: PlanOrigin, data: Dataset | None = None) -> PruningPlan:
    analysis: ChannelAnalysis = analyze(model)
    scores = score_groups(analysis, criterion, 0, data, model)
    groups = tuple(single_group_plan(g, scores[g.id], ratios.get(g.id, 0.0)).groups[0] for g in analysis.prunable)
    return PruningPlan(groups, criterion.value, replace(origin, ratios=ratios))


def plan_for_prune(directory: Path) -> PruningPlan:
    """The plan `prune --sensitivity DIR` applies: the target plan when one was derived, else the tolerance one."""
    if not directory.is_dir():
        from onnxprune.errors import InputFileError

        raise InputFileError(f"{directory}: no such sensitivity folder")
    for name in ("plan_target.json", "plan_tolerance.json"):
        if (directory / name).exists():
            return PruningPlan.load(directory / name)
    from onnxprune.errors import UsageError

    raise UsageError(f"{directory}: no plan_target.json or plan_tolerance.json (run onnxprune sensitivity first)")


def write_results(directory: Path, result: SensitivityResult, stages: list[dict[str, object]] | None = None) -> None:
    """sensitivity.{json,csv,md,png} into ``directory``; ``stages`` (per-stage times) go into the JSON."""
    report = result.to_json() | ({"stages": stages} if stages is not None else {})
    (directory / "sensitivity.json").write_text(json.dumps(report, indent=1) + "\n")
    keys = sorted(result.baseline)
    lines = ["group,ratio,channels_kept,macs_kept," + ",".join(keys)]
    lines += [f"{p.group},{p.ratio},{p.channels_kept},{p.macs_kept:.4f}," + ",".join(f"{p.values.get(k, '')}"
                                                                                  for k in keys) for p in result.points]
    (directory / "sensitivity.csv").write_text("\n".join(lines) + "\n")
    groups = list(dict.fromkeys(p.group for p in result.points))
    ratios = sorted({p.ratio for p in result.points})
    md = [f"Metric: {result.metric.value} (original {result.baseline[result.metric.value]:.4g}), criterion "
          f"{result.criterion.value}", "", "| group | " + " | ".join(f"{r:.0%}" for r in ratios) + " |",
          "|---|" + "---|" * len(ratios)]
    for g in groups:
        vals = {p.ratio: p.values[result.metric.value] for p in result.curve(g)}
        md.append(f"| {g} | " + " | ".join(f"{vals[r]:.4g}" for r in ratios) + " |")
    (directory / "sensitivity.md").write_text("\n".join(md) + "\n")
    _plot(directory / "sensitivity.png", result, groups)


def _plot(path: Path, result: SensitivityResult, groups: list[str]) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for g in groups:
        curve = sorted(result.curve(g), key=lambda p: p.ratio)
        ax.plot([0] + [p.ratio for p in curve], [result.baseline[result.metric.value]] +
                [p.values[result.metric.value] for p in curve], marker="o", markersize=3, linewidth=1,
                label=g if len(groups) <= 16 else None)
    ax.set_xlabel("filters pruned away (ratio of the group)")
    ax.set_ylabel(result.metric.value)
    ax.set_title("sensitivity of each layer group to pruning (Li et al. 2017, Fig. 2)")
    if len(groups) <= 16:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
