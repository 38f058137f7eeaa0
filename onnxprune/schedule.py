"""Pruning schedules: in what order the channels of a plan are chosen.

A schedule never changes *how many* channels each group loses — those counts come from the plan (ratio,
``--target-flops``, a sensitivity plan...) so every schedule reaches the same MACs — only *which* ones:

- ``oneshot``: every group is scored once on the original model and pruned at once;
- ``iterative``: ``steps`` rounds; after round i each group has lost ``round(n_g * i / steps)`` channels, chosen
  by re-scoring the model of the previous round (pruned, and recovered when ``--recover`` is given);
- ``layerwise``: one group per round, least sensitive first (the metric loss when that group alone is pruned
  at its planned count, measured on the data), re-scoring before each.

Every intermediate model is rewritten from the *original* with the cumulative plan and recovered against the
original's outputs, so recovery errors do not compound across rounds; only the selection sees the earlier
rounds. The data-driven criteria (``activation``, ``apoz``) and ``--recover`` are what make re-scoring differ
from one-shot; with a weight criterion and no recovery, rounds differ only through the inputs removed upstream.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.channels import ChannelAnalysis, analyze
from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion, score_groups
from onnxprune.metrics import (
    Metric,
    check_metric,
    default_metric,
    loss,
    metrics,
    outputs,
)
from onnxprune.plan import GroupPlan, PruningPlan, block_multiple, select_units
from onnxprune.progress import Stage, stage


class Schedule(enum.Enum):
    ONESHOT = "oneshot"
    ITERATIVE = "iterative"
    LAYERWISE = "layerwise"


@dataclass(frozen=True)
class ScheduleOptions:
    schedule: Schedule = Schedule.ONESHOT
    steps: int = 4                   # iterative rounds
    metric: Metric | None = None     # layerwise ordering; default: accuracy with labels, else agreement/cosine

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UsageError(f"`steps` {self.steps} must be >= 1")


# (model, cumulative plan on the original) -> the pruned (and recovered) model of that round
Rewrite = Callable[[PruningPlan], onnx.ModelProto]


def removal_counts(plan: PruningPlan) -> dict[str, int]:
    return {g.id: g.removed for g in plan.groups if g.removed}


def round_targets(plan: PruningPlan, options: ScheduleOptions, order: list[str]) -> list[dict[str, int]]:
    """Channels each group has lost after each round."""
    counts = removal_counts(plan)
    if options.schedule is Schedule.ITERATIVE:
        return [{g: round(n * i / options.steps) for g, n in counts.items()} for i in range(1, options.steps + 1)]
    if options.schedule is Schedule.LAYERWISE:
        return [{g: counts[g] for g in order[:i + 1]} for i in range(len(order))]
    return [counts]


def sensitivity_order(model: onnx.ModelProto, plan: PruningPlan, data: Dataset, metric: Metric | None,
                      masked: Callable[[onnx.ModelProto, PruningPlan], onnx.ModelProto]) -> list[tuple[str, float]]:
    """Groups with removals, least sensitive first: metric loss when only that group is pruned by ``plan``."""
    reference = outputs(model, data)
    metric = metric or default_metric(data, reference)
    check_metric(metric, data, reference)
    baseline = metrics(reference, reference, data.labels)
    losses = []
    pruned = [g for g in plan.groups if g.removed]
    with stage(f"layerwise order on {len(data)} samples", total=len(pruned), unit="groups") as progress:
        for g in pruned:
            alone = PruningPlan(tuple(x if x.id == g.id else GroupPlan(x.id, x.channels, tuple(range(x.channels)))
                                      for x in plan.groups), plan.criterion)
            value = metrics(reference, outputs(masked(model, alone), data), data.labels)
            losses.append((g.id, loss(metric, baseline, value)))
            progress.advance(g.id)
    return sorted(losses, key=lambda t: t[1])


def scheduled_plan(model: onnx.ModelProto, plan: PruningPlan, options: ScheduleOptions, criterion: Criterion,
                   seed: int, data: Dataset | None, rewrite: Rewrite, order: list[str]) -> PruningPlan:
    """The cumulative plan after every round; ``plan`` gives the counts (and the one-shot selection)."""
    targets = round_targets(plan, options, order)
    with stage(f"schedule {options.schedule.value}", total=len(targets), unit="rounds") as progress:
        return _rounds(model, plan, targets, options.schedule, criterion, seed, data, rewrite, progress)


def _rounds(model: onnx.ModelProto, plan: PruningPlan, targets: list[dict[str, int]], schedule: Schedule,
            criterion: Criterion, seed: int, data: Dataset | None, rewrite: Rewrite, progress: Stage) -> PruningPlan:
    original = analyze(model)
    groups = {g.id: g for g in plan.groups}
    removed: dict[str, np.ndarray] = {g.id: np.zeros(0, dtype=np.int64) for g in plan.groups}
    current, cumulative = model, plan
    for i, target in enumerate(targets):
        progress.advance(f"round {i + 1}", n=0)
        analysis = analyze(current) if i else original
        scores = score_groups(analysis, criterion, seed, data, current)
        for gid, want in target.items():
            extra = want - removed[gid].size
            if extra > 0:
                removed[gid] = _remove_more(analysis, gid, groups[gid], removed[gid], extra, scores,
                                            last=i == len(targets) - 1 or want == removal_counts(plan)[gid])
        cumulative = PruningPlan(
            tuple(GroupPlan(g.id, g.channels, tuple(int(k) for k in np.setdiff1d(np.arange(g.channels), removed[g.id])))
                  for g in plan.groups), plan.criterion,
            replace(plan.origin, schedule=schedule.value, steps=len(targets)))
        if i < len(targets) - 1:
            current = rewrite(cumulative)
        progress.advance(f"round {i + 1}")
    return cumulative


def _remove_more(analysis: ChannelAnalysis, gid: str, gplan: GroupPlan, removed: np.ndarray, extra: int,
                 scores: dict[str, np.ndarray], last: bool) -> np.ndarray:
    """Original indices removed after dropping ``extra`` more of the group's channels, scored on ``analysis``
    (whose group ``gid`` holds the original channels not yet removed, in order)."""
    alive = np.setdiff1d(np.arange(gplan.channels), removed)
    try:
        group = analysis.group(gid)
    except KeyError:
        group = None
    if group is None or group.channels != alive.size or gid not in scores:
        # the group is no longer prunable as one unit (e.g. frozen by an earlier round): keep the plan's choice
        planned = np.setdiff1d(np.arange(gplan.channels), gplan.keep)
        return np.union1d(removed, planned[np.isin(planned, alive)][:extra])
    kept = alive.size - extra
    multiple = block_multiple(group)
    if not last:  # intermediate rounds round up, so no round removes more than the plan's total
        kept = math.ceil(kept / multiple) * multiple
    keep_now = np.asarray(select_units(group, scores[gid], kept), dtype=np.int64)
    return np.union1d(removed, np.delete(alive, keep_now))
