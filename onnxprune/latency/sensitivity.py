"""Measured loss of each group at its latency steps: what ``prune --target-latency R --allocate sensitivity`` shares
the budget by.

Rule: each group is pruned alone (every other group whole) to a subset of its latency steps, at most
:data:`MAX_POINTS` of them spread over its range (the smallest always), and the loss of the metric on the
calibration data is measured there (the group at its full count loses nothing). For a metric where higher is better
(accuracy, agreement, line accuracy, cosine, a user metric) the loss is the *log retention* ``-log(value / original)``:
the fractions each group keeps multiply across groups, so their logs add up, and a group that breaks the model
(value near 0) costs without bound. A plain difference saturates instead (a group at 0 accuracy cannot lose more):
on the text-line recognizer the planner then cut one already damaged layer to 16 of 96 channels, at 41% line
accuracy against 59% with log retention. Metrics where lower is better (rel-l2, KL, CER) use the difference.
Between measured counts the loss
is interpolated linearly, and it is made monotone (a count never loses less than a larger one: the curve is the
running maximum from the full count down), so a noisy dip cannot make a deep cut look free.

Limits: losses are measured one group at a time and assumed to add up across groups (as in Li et al.'s
sensitivity analysis); they are measured before recovery; a metric on a few hundred samples moves in steps of
1/N, so small cuts often measure 0 and the planner breaks such ties by weights (see
:mod:`onnxprune.latency.planner`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from onnxprune.metrics import LOWER_IS_BETTER, Metric, UserMetric

#: Steps measured per group (the others are interpolated).
MAX_POINTS = 8


@dataclass(frozen=True)
class StepLosses:
    """Per group: (kept count, measured loss) points, ascending count, ending at the full count with loss 0;
    ``metric`` and ``samples``: what the losses were measured with."""

    metric: str
    samples: int
    curves: dict[str, tuple[tuple[int, float], ...]]

    def loss(self, group: str, kept: int) -> float:
        """The loss with ``group`` at ``kept`` units (0 for a group never measured)."""
        curve = self.curves.get(group)
        if not curve:
            return 0.0
        counts = np.array([c for c, _ in curve], dtype=np.float64)
        losses = np.maximum.accumulate(np.array([v for _, v in curve], dtype=np.float64)[::-1])[::-1]
        return float(np.interp(kept, counts, losses))

    def to_json(self) -> dict[str, object]:
        return {"metric": self.metric, "samples": self.samples,
                "curves": {g: [{"kept": c, "loss": v} for c, v in curve] for g, curve in self.curves.items()}}


def step_loss(metric: Metric | UserMetric, baseline: dict[str, float], value: dict[str, float]) -> float:
    """How much ``value`` lost against ``baseline`` (see the module doc): log retention where higher is better and
    the original is positive (the value floored at a thousandth of it), else the difference; >= 0 means worse."""
    b, v = baseline[metric.value], value[metric.value]
    if metric in LOWER_IS_BETTER:
        return v - b
    if b <= 0:
        return b - v
    return -math.log(max(v, b * 1e-3) / b)


def measured_counts(steps: tuple[int, ...], points: int = MAX_POINTS) -> tuple[int, ...]:
    """The steps below the full count to measure: all of them, or ``points`` spread evenly (the smallest always)."""
    below = steps[:-1]
    if len(below) <= points:
        return below
    picks = np.unique(np.round(np.linspace(0, len(below) - 1, points)).astype(int))
    return tuple(below[i] for i in picks)


def measure_step_losses(groups: Iterable[tuple[str, int, tuple[int, ...]]], loss_at: Callable[[str, int], float],
                        metric: str, samples: int, advance: Callable[[str], None] | None = None) -> StepLosses:
    """``groups``: (group id, full count, steps); ``loss_at(group, kept)``: the loss measured with that group alone
    at ``kept`` units. ``advance`` is called once per group (progress)."""
    curves = {}
    for gid, channels, steps in groups:
        points = [(k, max(0.0, float(loss_at(gid, k)))) for k in measured_counts(steps)]
        curves[gid] = (*points, (channels, 0.0))
        if advance is not None:
            advance(gid)
    return StepLosses(metric, samples, curves)
