"""Kept counts for a latency budget, from a :class:`~onnxprune.latency.model.LatencyModel`.

Rules:

- every count a planner returns is one of its group's *steps* (a grid count faster than every larger count;
  see :meth:`LatencyModel.steps`), so no plan keeps a count that is no faster than a larger one;
- ``uniform`` (the default): one ratio for every group (``ratio_for`` groups keep theirs), each count moved up
  to its nearest step, the ratio bisected to the largest one that misses the budget; from there the greedy
  steps below (coarse steps make one ratio jump past the budget: 16 -> 4 channels in every small group);
- ``global``: greedy knapsack across groups: starting from the whole model, repeatedly take the step down that
  loses the least importance per millisecond saved, until the budget is met; the ``uniform`` plan is made too, and
  the one of the two that loses less importance is kept (without measured ``losses``). A step taken early is
  never given back: on a synthetic two-group table at 0.6 of the latency, with every unit scored alike, the
  greedy from the whole model kept 4.0M MACs and the uniform start 6.2M, the best pair of steps. A step's importance lost is the
  MACs it removes (every layer that reads or writes the units, given a ``capacity`` model) times the mean of
  the removed units' scores normalized by their group's mean (the lowest units go first). Weighing by MACs
  makes groups comparable: a unit of a residual stream, read by every block, is worth the work it does in all
  of them, where counting units made it look as cheap as one block's channel. Without a capacity model, a
  unit counts as one;
- with measured ``losses`` (:mod:`onnxprune.latency.sensitivity`; ``--allocate sensitivity``): the same greedy,
  a step's importance lost being the loss measured with its group at the lower count minus the loss at the
  higher one; ties (a metric on a few hundred samples often measures 0 for small cuts) are broken by the weights
  rule above, scaled to a thousandth of a loss unit for the whole model;
- ``align``: counts planned another way (ratio, MAC target) moved up to their group's nearest step.

- the floor: a budget below what every group at its smallest step is predicted at times ``1 + FLOOR_SLACK``
  is planned for that instead. The last steps down to the smallest ones save the least time per importance lost:
  on the digits StudentNet (1 thread) the smallest steps kept 8k parameters and 62.2% top-1 after lsq, the floor
  plan 25k and 82.2%, both measured at 0.60-0.63 of the original. The prediction near the floor can be far off,
  so ``onnxprune.pruning.plan_for_latency`` checks the floor plan against the smallest steps by measurement.

Limits: counts never go below the grid's floor (10% of the group) or ``min_channels``; a budget below the floor
gets the plan near the floor above, and the report says the budget was not met. The greedy is not exact, from either
start: exchanging steps between two groups can keep more (on the synthetic table above at 0.8 of the latency,
7.5M MACs kept where the best pair of steps keeps 9.2M; ``tests/test_latency.py``). An exchange phase was left
out: global planning already takes 4-13 s on ResNet-50 (37 groups).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.channels.analysis import ChannelGroup
from onnxprune.latency.model import LatencyModel
from onnxprune.latency.sensitivity import StepLosses

#: A budget below the floor's prediction (every group at its smallest step) is planned for the floor's
#: prediction times 1 + this (see the module doc). Measured noise: 1.4-1.9% (std across windows of one pair).
FLOOR_SLACK = 0.03
#: With measured losses: the weight of the weights rule (as a fraction of the whole model's) in a step's importance.
TIE_BREAK = 1e-3


@dataclass(frozen=True)
class Steps:
    """Each group's steps (ascending) and the helpers the planners share."""

    by_group: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, model: LatencyModel, groups: list[ChannelGroup], multiple: Callable[[ChannelGroup], int],
           min_channels: int, floors: dict[str, int] | None = None) -> Steps:
        """``floors``: per group, the fewest units a step keeps (partial readers' blocks; see
        :mod:`onnxprune.channels.readers`)."""
        floors = floors or {}
        return cls({g.id: model.steps(g, multiple(g), max(min(min_channels, g.channels), floors.get(g.id, 0)))
                    for g in groups})

    def up(self, gid: str, kept: int) -> int:
        """The smallest step >= ``kept`` (the full count at most)."""
        steps = self.by_group[gid]
        return next((s for s in steps if s >= kept), steps[-1])


def floor_ms(model: LatencyModel, groups: list[ChannelGroup], steps: Steps) -> float:
    """The predicted latency with every group at its smallest step: what these steps cannot go below."""
    return model.predict(model.removed_for({g.id: steps.by_group[g.id][0] for g in groups}, {g.id: g for g in groups}))


def reachable_budget(model: LatencyModel, groups: list[ChannelGroup], steps: Steps, budget_ms: float,
                     slack: float = FLOOR_SLACK) -> float:
    """``budget_ms``, or the floor's prediction times ``1 + slack`` when that is more (module doc)."""
    return max(budget_ms, floor_ms(model, groups, steps) * (1 + slack))


def align_to_steps(kept: dict[str, int], steps: Steps) -> dict[str, int]:
    return {gid: steps.up(gid, k) for gid, k in kept.items()}


#: MACs left after removing the units of a mask (``onnxprune.plan.CostModel.macs``).
Capacity = Callable[[np.ndarray], float]


def plan_uniform(model: LatencyModel, groups: list[ChannelGroup], steps: Steps, budget_ms: float,
                 ratio_for: dict[str, float], scores: dict[str, np.ndarray],
                 capacity: Capacity | None = None, slack: float = FLOOR_SLACK) -> dict[str, int]:
    """One ratio for all groups (``ratio_for`` ones fixed), counts moved up to steps, bisected to the budget (at
    least the floor's, see :func:`reachable_budget`)."""
    by_id = {g.id: g for g in groups}
    budget_ms = reachable_budget(model, groups, steps, budget_ms, slack)

    def counts(r: float) -> dict[str, int]:
        return {g.id: steps.up(g.id, g.channels - round(ratio_for.get(g.id, r) * g.channels)) for g in groups}

    def latency(r: float) -> float:
        return model.predict(model.removed_for(counts(r), by_id))

    lo, hi = 0.0, 0.95
    if latency(hi) > budget_ms:
        return counts(hi)
    if latency(lo) <= budget_ms:
        return counts(lo)
    for _ in range(24):
        mid = (lo + hi) / 2
        if latency(mid) <= budget_ms:
            hi = mid
        else:
            lo = mid
    return greedy_steps(model, groups, steps, budget_ms, scores, counts(lo), capacity)


def plan_global(model: LatencyModel, groups: list[ChannelGroup], steps: Steps, budget_ms: float,
                scores: dict[str, np.ndarray], capacity: Capacity | None = None,
                losses: StepLosses | None = None, slack: float = FLOOR_SLACK) -> dict[str, int]:
    """Greedy from the whole model (see :func:`greedy_steps`) to the budget (at least the floor's, see
    :func:`reachable_budget`); without ``losses``, the uniform plan (:func:`plan_uniform`, the same greedy from one
    ratio) too, and of the two within the budget the one that loses less importance (:meth:`_Importance.lost`)."""
    budget_ms = reachable_budget(model, groups, steps, budget_ms, slack)
    greedy = greedy_steps(model, groups, steps, budget_ms, scores, {g.id: g.channels for g in groups}, capacity,
                          losses)
    if losses is not None:
        return greedy
    uniform = plan_uniform(model, groups, steps, budget_ms, {}, scores, capacity, slack=0.0)
    by_id = {g.id: g for g in groups}
    fits = [k for k in (greedy, uniform) if model.predict(model.removed_for(k, by_id)) <= budget_ms]
    if len(fits) < 2:
        return fits[0] if fits else greedy
    importance = _Importance(model, groups, scores, capacity)
    return min(fits, key=importance.lost)   # the greedy on a tie


class _Importance:
    """Importance lost between two counts of a group: the mean normalized score of the units between them
    (lowest first) times the MACs those units carry (their number, without a capacity model); with ``losses``,
    the measured loss between the two counts plus that, as a tie-break (see the module doc)."""

    def __init__(self, model: LatencyModel, groups: list[ChannelGroup], scores: dict[str, np.ndarray],
                 capacity: Capacity | None, losses: StepLosses | None = None) -> None:
        self.model, self.capacity, self.losses = model, capacity, losses
        self._seen: OrderedDict[tuple[tuple[str, int], ...], float] = OrderedDict()
        self.by_id = {g.id: g for g in groups}
        self.ordered = {}   # per group: its normalized scores, lowest first (removed in this order)
        for g in groups:
            s = np.asarray(scores[g.id], dtype=np.float64)
            mean = float(s.mean()) if s.size and s.mean() > 0 else 1.0
            self.ordered[g.id] = np.sort(s / mean)
        self.whole = 1.0   # the weights rule's importance of the whole model, the tie-break's scale
        if losses is not None:
            full = {g.id: g.channels for g in groups}
            self.whole = max(sum(self.weights(full, g.id, 0) for g in groups), 1e-12)

    def between(self, kept: dict[str, int], gid: str, step: int) -> float:
        """Lost going from ``kept[gid]`` down to ``step`` (or gained going up, the other way round)."""
        weights = self.weights(kept, gid, step)
        if self.losses is None:
            return weights
        hi, lo = max(kept[gid], step), min(kept[gid], step)
        return self.losses.loss(gid, lo) - self.losses.loss(gid, hi) + TIE_BREAK * weights / self.whole

    def lost(self, kept: dict[str, int]) -> float:
        """Importance lost from the whole model to ``kept``, the groups stepped down one after another in a fixed
        order (with uniform scores and a capacity model: exactly the MACs removed)."""
        counts = {gid: g.channels for gid, g in self.by_id.items()}
        total = 0.0
        for gid in sorted(kept):
            if kept[gid] != counts[gid]:
                total += self.between(counts, gid, kept[gid])
                counts[gid] = kept[gid]
        return total

    def weights(self, kept: dict[str, int], gid: str, step: int) -> float:
        """The weights rule's importance between ``kept[gid]`` and ``step``."""
        hi, lo = max(kept[gid], step), min(kept[gid], step)
        c = self.by_id[gid].channels
        units = self.ordered[gid][c - hi:c - lo]
        if self.capacity is None or units.size == 0:
            return float(units.sum())
        macs = abs(self._macs({**kept, gid: lo}) - self._macs({**kept, gid: hi}))
        return float(units.mean()) * macs

    def _macs(self, counts: dict[str, int]) -> float:
        """MACs at ``counts``; the last few are remembered (one side of every step is the planner's current
        counts, asked for once per group)."""
        key = tuple(sorted(counts.items()))
        if key in self._seen:
            self._seen.move_to_end(key)
        else:
            assert self.capacity is not None
            self._seen[key] = self.capacity(self.model.removed_for(counts, self.by_id))
            if len(self._seen) > 256:
                self._seen.popitem(last=False)
        return self._seen[key]


def greedy_steps(model: LatencyModel, groups: list[ChannelGroup], steps: Steps, budget_ms: float,
                 scores: dict[str, np.ndarray], start: dict[str, int], capacity: Capacity | None = None,
                 losses: StepLosses | None = None) -> dict[str, int]:
    """From the counts ``start``: the step down with the least importance lost per millisecond saved (see the
    module doc), until the budget is met (or every group is at its smallest step)."""
    by_id = {g.id: g for g in groups}
    importance = _Importance(model, groups, scores, capacity, losses)
    kept = dict(start)
    current = model.predict(model.removed_for(kept, by_id))
    while current > budget_ms:
        best: tuple[float, str, int, float] | None = None
        for g in groups:
            for step in reversed([s for s in steps.by_group[g.id] if s < kept[g.id]]):
                ms = model.predict(model.removed_for({**kept, g.id: step}, by_id))
                saved = current - ms
                if saved > 0:
                    break   # the largest smaller step that is faster where the other groups are now
            else:
                continue
            cost = importance.between(kept, g.id, step) / saved
            if best is None or cost < best[0]:
                best = (cost, g.id, step, ms)
        if best is None:
            break   # every group is at its smallest step: the budget cannot be met
        _, gid, step, current = best
        kept[gid] = step
    return fill_up(model, groups, steps, budget_ms, importance, kept) if current <= budget_ms else kept


def fill_up(model: LatencyModel, groups: list[ChannelGroup], steps: Steps, budget_ms: float,
            importance: _Importance, kept: dict[str, int]) -> dict[str, int]:
    """Within the budget, give channels back: the step up that regains the most importance per
    millisecond added, while the prediction stays within the budget (one coarse step down may have overshot)."""
    by_id = {g.id: g for g in groups}
    while True:
        best: tuple[float, str, int] | None = None
        for g in groups:
            step = next((s for s in steps.by_group[g.id] if s > kept[g.id]), None)
            if step is None:
                continue
            trial = {**kept, g.id: step}
            ms = model.predict(model.removed_for(trial, by_id))
            if ms > budget_ms:
                continue
            gained = importance.between(kept, g.id, step)
            added = max(ms - model.predict(model.removed_for(kept, by_id)), 1e-9)
            if best is None or gained / added > best[0]:
                best = (gained / added, g.id, step)
        if best is None:
            return kept
        kept[best[1]] = best[2]
