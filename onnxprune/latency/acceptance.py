"""How `prune --target-latency` judges a plan it has measured: how many measurement windows, and when it is close
enough to the request.

Rule: a plan is timed against the original in one window (``paired_timing``: >= 30 rounds and 1 s). A plan whose
first window is more than ``near`` from the request is judged on it (re-planning corrects it anyway). A plan near
the request is timed in more windows, at least ``min_windows``, until the standard error of their mean is at most
``standard_error`` of the request or ``max_windows`` were run, and judged on the mean: accepted when it is within
``tolerance`` of the request. The standard error uses the windows' spread pooled with that of the plans timed
before it in the same search (relative to each plan's mean): three windows alone can agree by chance.

Why: one window of a plan on this project's shared 2-core VM spreads by 1.2-2.6% (sd, 2 threads; 0.4-0.6% for the
original against itself; benchmarks/results/latency_drift.md), and bench_latency_plan's second measurement of
the kept plans landed more than 5% off in 11 of 52 cells with 2 threads, 8 of which the planner had measured within
5% on the mean of two windows. Judged on one or two windows, a plan several percent off is accepted by a lucky
draw, and since plans are made to fit under their budget, the lucky ones are mostly the too-fast ones
(all five 2-thread misses at 0.7 were 6-8% too fast). With 1 thread the spread is small and the windows stop at
``min_windows``.

Limits: more windows cost time (a window is 2-6 s on the zoo models); the windows of one call are minutes apart at
most, so a machine that changes speed over longer spans is not averaged out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LatencyCheck:
    """The rule a measured plan is judged by (module doc). ``tolerance``, ``near``, ``standard_error``: fractions
    of the request."""

    tolerance: float = 0.025
    near: float = 0.05
    min_windows: int = 3
    max_windows: int = 6
    standard_error: float = 0.006

    def __post_init__(self) -> None:
        if not 0 < self.tolerance <= self.near:
            raise ValueError(f"LatencyCheck: need 0 < tolerance <= near, got {self.tolerance} and {self.near}")
        if not 1 <= self.min_windows <= self.max_windows:
            raise ValueError(f"LatencyCheck: need 1 <= min_windows <= max_windows, got {self.min_windows} and "
                             f"{self.max_windows}")

    def within(self, ratio: float, request: float) -> bool:
        return abs(ratio / request - 1) <= self.tolerance


#: The rule before windows were added: a plan within 3% in its first window is timed once more, judged on the mean of
#: the two (kept for benchmarks/bench_latency_acceptance.py, which compares the two rules).
TWO_WINDOWS = LatencyCheck(tolerance=0.03, near=0.03, min_windows=2, max_windows=2, standard_error=math.inf)


@dataclass(frozen=True)
class Judged:
    """A plan's measured ratio (the mean of its windows), the windows' ratios, and whether it was accepted."""

    ratio: float
    windows: tuple[float, ...]
    accepted: bool


def pooled_sd(series: Sequence[Sequence[float]]) -> float:
    """The relative sd of windows about their own series' mean, pooled over ``series`` (0 without two windows in
    one series)."""
    squares, freedom = 0.0, 0
    for windows in series:
        if len(windows) > 1:
            mean = statistics.fmean(windows)
            squares += sum((w / mean - 1) ** 2 for w in windows)
            freedom += len(windows) - 1
    return math.sqrt(squares / freedom) if freedom else 0.0


def judge(measure: Callable[[], float], request: float, check: LatencyCheck,
          earlier: Sequence[Sequence[float]] = ()) -> Judged:
    """Time a plan by ``measure`` (one window, its ratio to the original) as ``check`` says (module doc);
    ``earlier``: the windows of the plans timed before it in the same search."""
    windows = [measure()]
    if abs(windows[0] / request - 1) <= check.near:
        while len(windows) < check.max_windows and (
                len(windows) < check.min_windows or
                pooled_sd([*earlier, windows]) / math.sqrt(len(windows)) > check.standard_error):
            windows.append(measure())
    ratio = statistics.fmean(windows)
    return Judged(ratio, tuple(windows), check.within(ratio, request))
