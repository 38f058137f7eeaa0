"""Pruning plans: which units of each group to keep, decided from scores and :class:`PlanOptions`.

Strategies (in order of precedence):

- ``target_flops=F``: the smallest pruning with MACs <= F x the original, found by bisection on the one ratio
  applied to every group, or with ``global_ranking`` on the number of globally lowest-ranked units removed
  (rounding applied, MACs from an exact model of the rewritten graph);
- ``global_ranking``: remove the lowest ``ratio`` of all eligible units, ranked together;
- otherwise each group loses ``round(ratio x channels)`` units; ``ratio_for`` globs set per-group ratios (the
  first glob matching a source layer name or the group id wins).

Always: ``exclude`` globs skip groups; a group keeps at least ``min_channels``; ``round_to=N`` makes the kept
count a multiple of N (nearest, at least N, never more than the group has), in every layer that reads part of a
group too (:mod:`onnxprune.channels.readers`; latency plans: the table's block); grouped convs keep equally many
channels per group. A plan is JSON (``to_json`` / ``from_json``) so a run can be reviewed and replayed.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from onnxprune.channels import ChannelAnalysis, ChannelGroup
from onnxprune.channels.readers import block_aligned_scores
from onnxprune.errors import PreconditionError, UsageError
from onnxprune.flops import CostReport
from onnxprune.importance import Criterion
from onnxprune.io import write_text_atomic
from onnxprune.latency.model import LatencyModel
from onnxprune.latency.planner import (
    FLOOR_SLACK,
    Steps,
    align_to_steps,
    plan_global,
    plan_uniform,
)
from onnxprune.latency.sensitivity import StepLosses
from onnxprune.targets import TARGETS

PLAN_FORMAT = 1

#: Kept-channel multiple each target runs fastest with (see :class:`onnxprune.targets.RuntimeTarget`), the default
#: of ``prune --round-to``; ``none`` keeps exact counts.
CHANNEL_MULTIPLE: dict[str, int] = {**{t.name: t.channel_multiple for t in TARGETS.values()}, "none": 1}


class Align(enum.StrEnum):
    """Where planned counts land: ``round_to`` multiples, or (``latency``) each group's nearest latency step."""

    NONE = "none"
    LATENCY = "latency"


class Allocate(enum.StrEnum):
    """How ``target_latency`` shares the budget among groups: ``weights`` (each unit's score times the MACs it
    carries; no data) or ``sensitivity`` (the loss measured on calibration data with each group alone at each of
    its latency steps: :mod:`onnxprune.latency.sensitivity`)."""

    WEIGHTS = "weights"
    SENSITIVITY = "sensitivity"


@dataclass(frozen=True)
class PlanOptions:
    """``target_latency``: fraction of the original's measured latency to plan for (needs a latency model);
    ``align`` latency: counts planned by ratio or MAC target moved up to their group's nearest latency step;
    ``allocate``: how a latency budget is shared among groups (:class:`Allocate`); ``sensitivity_samples``: how
    many calibration samples (evenly spaced over the data) ``allocate`` sensitivity measures each step on."""

    ratio: float = 0.0
    ratio_for: tuple[tuple[str, float], ...] = ()
    exclude: tuple[str, ...] = ()
    global_ranking: bool = False
    target_flops: float | None = None
    min_channels: int = 1
    round_to: int = 1
    criterion: Criterion = Criterion.L1
    seed: int = 0
    target_latency: float | None = None
    align: Align = Align.NONE
    allocate: Allocate = Allocate.WEIGHTS
    sensitivity_samples: int = 128

    @property
    def needs_latency(self) -> bool:
        return self.target_latency is not None or self.align is Align.LATENCY

    def __post_init__(self) -> None:
        for name, r in (("ratio", self.ratio), *(("ratio-for " + g, r) for g, r in self.ratio_for)):
            if not 0.0 <= r < 1.0:
                raise UsageError(f"{name}: ratio {r} must be in [0, 1)")
        if self.target_flops is not None and not 0.0 < self.target_flops <= 1.0:
            raise UsageError(f"`target_flops` {self.target_flops} must be in (0, 1]")
        if self.target_latency is not None and not 0.0 < self.target_latency <= 1.0:
            raise UsageError(f"`target_latency` {self.target_latency} must be in (0, 1]")
        if self.target_latency is not None and self.target_flops is not None:
            raise UsageError("`target_latency` and `target_flops` both set the size: choose one")
        if self.allocate is Allocate.SENSITIVITY and self.target_latency is None:
            raise UsageError("`allocate` sensitivity shares a latency budget: it needs `target_latency`")
        if self.allocate is Allocate.SENSITIVITY and self.ratio_for:
            raise UsageError("`allocate` sensitivity chooses every group's count from measured losses: not with "
                             "`ratio_for` (`exclude` keeps groups whole)")
        if self.min_channels < 1 or self.round_to < 1 or self.sensitivity_samples < 1:
            raise UsageError("`min_channels`, `round_to` and `sensitivity_samples` must be >= 1")


@dataclass(frozen=True)
class GroupPlan:
    id: str
    channels: int
    keep: tuple[int, ...]

    @property
    def removed(self) -> int:
        return self.channels - len(self.keep)


@dataclass(frozen=True)
class PlanOrigin:
    """How a plan was made (written into its JSON as ``options``): ``options``, the PlanOptions it was planned
    with, or a sensitivity run (``source`` "sensitivity": per-group ``ratios`` chosen at ``tolerance`` or for
    ``target_flops``, by ``metric``); ``schedule`` and ``steps`` when a schedule chose the channels."""

    source: str = "options"
    options: PlanOptions | None = None
    ratios: dict[str, float] | None = None
    tolerance: float | None = None
    target_flops: float | None = None
    metric: str | None = None
    schedule: str | None = None
    steps: int | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.options is not None:
            out.update({k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self.options).items()})
        if self.source != "options":
            out["from"] = self.source
        for key in ("ratios", "tolerance", "target_flops", "metric", "schedule", "steps"):
            value = getattr(self, key)
            if value is not None and not (key == "target_flops" and self.options is not None):
                out[key] = value
        return json.loads(json.dumps(out))   # JSON-shaped (tuples as lists)

    @classmethod
    def from_json(cls, data: object) -> PlanOrigin:
        """Read back what :meth:`to_json` wrote; keys it does not know are ignored (a plan stays replayable)."""
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in fields(PlanOptions)}
        options = None
        if data.get("from", "options") == "options" and known & set(data):
            try:
                raw = {k: v for k, v in data.items() if k in known}
                raw["ratio_for"] = tuple((str(g), float(r)) for g, r in raw.get("ratio_for", ()))
                raw["exclude"] = tuple(str(g) for g in raw.get("exclude", ()))
                raw["criterion"] = Criterion(raw.get("criterion", Criterion.L1.value))
                raw["align"] = Align(raw.get("align", Align.NONE.value))
                raw["allocate"] = Allocate(raw.get("allocate", Allocate.WEIGHTS.value))
                options = PlanOptions(**raw)
            except (TypeError, ValueError, UsageError):
                options = None   # provenance only: a plan whose options no longer validate still replays
        steps = data.get("steps")
        return cls(str(data.get("from", "options")), options, data.get("ratios"), data.get("tolerance"),
                   data.get("target_flops") if options is None else None, data.get("metric"),
                   data.get("schedule"), int(steps) if isinstance(steps, int) else None)


@dataclass(frozen=True)
class PruningPlan:
    groups: tuple[GroupPlan, ...]
    criterion: str = Criterion.L1.value
    origin: PlanOrigin = field(default_factory=PlanOrigin)

    def to_json(self) -> dict[str, object]:
        return {"format": PLAN_FORMAT, "criterion": self.criterion, "options": self.origin.to_json(),
                "groups": [{"id": g.id, "channels": g.channels, "keep": list(g.keep)} for g in self.groups]}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PruningPlan:
        if data.get("format") != PLAN_FORMAT:
            raise UsageError(f"plan format {data.get('format')!r} is not supported (expected {PLAN_FORMAT})")
        try:
            groups = tuple(GroupPlan(str(g["id"]), int(g["channels"]), tuple(int(i) for i in g["keep"]))
                           for g in data["groups"])  # type: ignore[union-attr]
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"plan is malformed: {e}") from None
        return cls(groups, str(data.get("criterion", "")), PlanOrigin.from_json(data.get("options")))

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        from onnxprune.paths import read_regular_file

        text = read_regular_file(path, "plan")
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read plan {path}: {e}") from None
        except RecursionError:
            raise UsageError(f"cannot read plan {path}: nested too deeply") from None
        if not isinstance(data, dict):
            raise UsageError(f"cannot read plan {path}: expected a JSON object")
        return cls.from_json(data)

    def off_multiple(self, multiple: int) -> list[tuple[str, int]]:
        """(group, kept) for every pruned group whose kept count is not a multiple of ``multiple``."""
        return [(g.id, len(g.keep)) for g in self.groups if g.removed and len(g.keep) % multiple]

    def removed_roots(self, analysis: ChannelAnalysis) -> np.ndarray:
        """Boolean array over element ids: True for the roots of removed units. Validates the plan against the
        analysis of the model it is applied to: :class:`PreconditionError` (exit 8) when the plan was made for
        another model (a group missing, another channel count, a frozen group pruned, bad indices)."""
        removed = np.zeros(len(analysis.roots), dtype=bool)
        by_id = {g.id: g for g in analysis.groups}
        for gp in self.groups:
            group = by_id.get(gp.id)
            if group is None:
                raise PreconditionError(f"plan group {gp.id!r} does not exist in this model")
            if group.channels != gp.channels:
                raise PreconditionError(f"plan group {gp.id!r} has {gp.channels} channels, the model has {group.channels}")
            if gp.removed and not group.prunable:
                raise PreconditionError(f"plan prunes group {gp.id!r}, which is frozen: {group.reason}")
            keep = set(gp.keep)
            if not keep or any(not 0 <= k < group.channels for k in keep):
                raise PreconditionError(f"plan group {gp.id!r}: kept indices must be non-empty and within 0..{group.channels - 1}")
            drop = np.asarray([i for i in range(group.channels) if i not in keep], dtype=np.int64)
            removed[group.units[drop]] = True
        return removed


# ---------------------------------------------------------------------------------------------- cost model
class CostModel:
    """Exact MACs of the graph after removing units, without rewriting it: each counted layer's MACs scale with
    the kept fraction of its input channels and of its output channels (depthwise: output only)."""

    def __init__(self, analysis: ChannelAnalysis, costs: CostReport) -> None:
        macs = {layer.node: layer.macs or 0 for layer in costs.layers}
        self.total = costs.macs
        self.layers: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
        depthwise = {id(n) for n in analysis.depthwise}
        for node in analysis.graph.nodes:
            base = macs.get(node.name or node.outputs[0].name)
            if not base:
                continue
            def roots(t):
                lay = analysis.layouts.get(t.name)
                return None if lay is None else analysis.roots[lay.elems]
            in_roots = None if id(node) in depthwise else roots(node.inputs[0])
            self.layers.append((base, in_roots, roots(node.outputs[0])))

    def macs(self, removed: np.ndarray) -> int:
        total = self.total
        for base, in_roots, out_roots in self.layers:
            frac = 1.0
            if in_roots is not None:
                frac *= 1.0 - removed[in_roots].mean()
            if out_roots is not None:
                frac *= 1.0 - removed[out_roots].mean()
            total -= base * (1.0 - frac)
        return int(round(total))


# ---------------------------------------------------------------------------------------------- planning
def _matches(group: ChannelGroup, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (group.id, *group.sources))


def round_kept(kept: int, channels: int, round_to: int, min_channels: int, multiple: int = 1) -> int:
    """Kept count after the minimum, rounding to a multiple of ``round_to`` and grouped-conv divisibility."""
    step = math.lcm(round_to, multiple)
    kept = max(kept, min(min_channels, channels))
    if step > 1:
        kept = max(step, int(round(kept / step)) * step)
    return min(kept, channels)


def select_units(group: ChannelGroup, scores: np.ndarray, kept: int) -> tuple[int, ...]:
    """The ``kept`` highest-scoring units, equally many per block when grouped convs constrain the group."""
    if kept >= group.channels:
        return tuple(range(group.channels))
    if group.blocks:
        blocks = group.blocks[0]
        per = kept // blocks.shape[0]
        chosen = [b[np.argsort(-scores[b], kind="stable")[:per]] for b in blocks]
        keep = np.sort(np.concatenate(chosen))
        for other in group.blocks[1:]:  # every other partition must also be balanced
            counts = [np.isin(b, keep).sum() for b in other]
            if len(set(counts)) != 1:
                return tuple(range(group.channels))
        return tuple(int(i) for i in keep)
    order = np.argsort(-scores, kind="stable")[:kept]
    return tuple(int(i) for i in np.sort(order))


def block_multiple(group: ChannelGroup) -> int:
    return math.lcm(*(int(b.shape[0]) for b in group.blocks)) if group.blocks else 1


@dataclass(frozen=True)
class LatencyUnits:
    """What a latency plan chooses among: the eligible groups, their scores ordered a block at a time where layers
    read part of a group, each group's floor (:mod:`onnxprune.channels.readers`), the latency model choosing units
    by those scores, and each group's steps."""

    eligible: list[ChannelGroup]
    scores: dict[str, np.ndarray]
    floors: dict[str, int]
    latency: LatencyModel
    steps: Steps


def latency_units(analysis: ChannelAnalysis, scores: dict[str, np.ndarray], options: PlanOptions,
                  latency: LatencyModel) -> LatencyUnits:
    eligible = [g for g in analysis.prunable if not any(_matches(g, p) for p in options.exclude)]
    aligned = block_aligned_scores(analysis, scores, latency.table.multiple)
    latency = latency.with_scores(aligned.scores)
    steps = Steps.of(latency, eligible, block_multiple, options.min_channels, aligned.floors)
    return LatencyUnits(eligible, aligned.scores, aligned.floors, latency, steps)


def smallest_steps_plan(analysis: ChannelAnalysis, scores: dict[str, np.ndarray], options: PlanOptions,
                        latency: LatencyModel) -> PruningPlan:
    """Every eligible group at its smallest latency step: what latency planning cannot go below (a request below
    it gets the floor plan near it, see :mod:`onnxprune.latency.planner`): a budget below the floor, no slack."""
    return make_plan(analysis, scores, replace(options, target_latency=1e-3), latency=latency, floor_slack=0.0)


def make_plan(analysis: ChannelAnalysis, scores: dict[str, np.ndarray], options: PlanOptions,
              cost: CostModel | None = None, latency: LatencyModel | None = None,
              losses: StepLosses | None = None, floor_slack: float = FLOOR_SLACK) -> PruningPlan:
    """The plan for ``options``: ``cost`` (MACs) serves ``target_flops``, ``latency`` serves ``target_latency``
    and ``align`` latency (see :mod:`onnxprune.latency.planner`; with ``cost`` too, the latency planner weighs
    importance by the MACs a unit carries; with ``losses``, by the loss measured at each step, greedily from the
    whole model); counts on latency steps skip ``round_to``. ``floor_slack``: how far above the floor's prediction a
    budget below it is planned (:data:`~onnxprune.latency.planner.FLOOR_SLACK`)."""
    if options.needs_latency and latency is None:
        raise ValueError("target_latency and align latency need a latency model")
    steps = None
    if options.needs_latency:
        assert latency is not None
        units = latency_units(analysis, scores, options, latency)
        eligible, scores, floors, latency, steps = units.eligible, units.scores, units.floors, units.latency, \
            units.steps
    else:
        eligible = [g for g in analysis.prunable if not any(_matches(g, p) for p in options.exclude)]
        # a layer reading part of a group (zero-padded shortcut, Split) keeps a multiple of the block too
        aligned = block_aligned_scores(analysis, scores, options.round_to)
        scores, floors = aligned.scores, aligned.floors
    if options.target_latency is not None:
        assert latency is not None and steps is not None
        budget = options.target_latency * latency.full_ms
        capacity = cost.macs if cost is not None else None
        if options.global_ranking or losses is not None:
            kept = plan_global(latency, eligible, steps, budget, scores, capacity, losses, floor_slack)
        else:
            ratio_for = {g.id: next(r for p, r in options.ratio_for if _matches(g, p)) for g in eligible
                         if any(_matches(g, p) for p, _ in options.ratio_for)}
            kept = plan_uniform(latency, eligible, steps, budget, ratio_for, scores, capacity, floor_slack)
    elif options.target_flops is not None:
        if cost is None:
            raise ValueError("target_flops needs a cost model")
        if options.global_ranking:
            kept = _target_flops(analysis, eligible, scores, options, cost, floors)
        else:
            kept = _target_flops_uniform(analysis, eligible, scores, options, cost, floors)
    elif options.global_ranking:
        kept = _global(eligible, scores, options, options.ratio)
    else:
        kept = _uniform(eligible, options, options.ratio)
    if steps is not None and options.target_latency is None:
        by_id = {g.id: g for g in eligible}
        kept = align_to_steps({gid: max(k, min(options.min_channels, by_id[gid].channels)) for gid, k in kept.items()},
                              steps)
    groups = []
    for g in analysis.prunable:
        if g.id not in kept:
            k = g.channels
        elif steps is not None:
            k = kept[g.id]   # a latency step: already a valid count
        else:
            k = round_kept(kept[g.id], g.channels, options.round_to, options.min_channels, block_multiple(g))
        groups.append(GroupPlan(g.id, g.channels, select_units(g, scores[g.id], max(k, floors.get(g.id, 0)))))
    return PruningPlan(tuple(groups), options.criterion.value, PlanOrigin(options=options))


def _uniform(eligible: list[ChannelGroup], options: PlanOptions, ratio: float) -> dict[str, int]:
    kept = {}
    for g in eligible:
        r = next((r for p, r in options.ratio_for if _matches(g, p)), ratio)
        kept[g.id] = g.channels - int(round(r * g.channels))
    return kept


def _removed_mask(analysis: ChannelAnalysis, by_id: dict[str, ChannelGroup], scores: dict[str, np.ndarray],
                  options: PlanOptions, kept: dict[str, int], floors: dict[str, int]) -> np.ndarray:
    removed = np.zeros(len(analysis.roots), dtype=bool)
    for gid, k in kept.items():
        g = by_id[gid]
        k = max(round_kept(k, g.channels, options.round_to, options.min_channels, block_multiple(g)),
                floors.get(gid, 0))
        keep = set(select_units(g, scores[gid], k))
        removed[g.units[[i for i in range(g.channels) if i not in keep]]] = True
    return removed


def _target_flops_uniform(analysis: ChannelAnalysis, eligible: list[ChannelGroup], scores: dict[str, np.ndarray],
                          options: PlanOptions, cost: CostModel, floors: dict[str, int]) -> dict[str, int]:
    """Bisection on the one ratio applied to every group (``ratio_for`` groups keep their own)."""
    target = options.target_flops * cost.total
    by_id = {g.id: g for g in eligible}
    lo, hi = 0.0, 0.99
    best = _uniform(eligible, options, hi)
    if cost.macs(_removed_mask(analysis, by_id, scores, options, best, floors)) > target:
        return best
    for _ in range(20):
        mid = (lo + hi) / 2
        kept = _uniform(eligible, options, mid)
        if cost.macs(_removed_mask(analysis, by_id, scores, options, kept, floors)) <= target:
            hi, best = mid, kept
        else:
            lo = mid
    return best


def _global(eligible: list[ChannelGroup], scores: dict[str, np.ndarray], options: PlanOptions,
            ratio: float) -> dict[str, int]:
    total = sum(g.channels for g in eligible)
    return _remove_lowest(eligible, scores, options, int(round(ratio * total)))


def _remove_lowest(eligible: list[ChannelGroup], scores: dict[str, np.ndarray], options: PlanOptions,
                   n_remove: int) -> dict[str, int]:
    """Kept count per group after removing the ``n_remove`` globally lowest-scoring units (respecting the
    per-group minimum)."""
    entries = sorted((float(s), g.id) for g in eligible for s in scores[g.id])
    removed = {g.id: 0 for g in eligible}
    limit = {g.id: g.channels - min(options.min_channels, g.channels) for g in eligible}
    done = 0
    for _, gid in entries:
        if done >= n_remove:
            break
        if removed[gid] < limit[gid]:
            removed[gid] += 1
            done += 1
    return {g.id: g.channels - removed[g.id] for g in eligible}


def _target_flops(analysis: ChannelAnalysis, eligible: list[ChannelGroup], scores: dict[str, np.ndarray],
                  options: PlanOptions, cost: CostModel, floors: dict[str, int]) -> dict[str, int]:
    target = options.target_flops * cost.total
    by_id = {g.id: g for g in eligible}

    def evaluate(n: int) -> tuple[int, dict[str, int]]:
        kept = _remove_lowest(eligible, scores, options, n)
        return cost.macs(_removed_mask(analysis, by_id, scores, options, kept, floors)), kept

    lo, hi = 0, sum(g.channels for g in eligible)
    best = evaluate(hi)
    if best[0] > target:
        return best[1]  # cannot reach the target: prune as far as allowed
    while lo < hi:
        mid = (lo + hi) // 2
        macs, kept = evaluate(mid)
        if macs <= target:
            hi, best = mid, (macs, kept)
        else:
            lo = mid + 1
    return best[1]
