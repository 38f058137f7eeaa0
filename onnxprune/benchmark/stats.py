"""Latency statistics: percentiles, and the speedup of one model over another with a bootstrap interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Latency percentiles in milliseconds (as every command prints them) over ``n`` runs."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    n: int

    @classmethod
    def of(cls, seconds: list[float] | np.ndarray) -> "Summary":
        """Summarize run times given in seconds."""
        t = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(t.mean()), float(t.std(ddof=1)) if len(t) > 1 else 0.0,
                   float(t.min()), int(len(t)))


@dataclass(frozen=True)
class Speedup:
    """baseline time / candidate time (:func:`speedup`: of the medians; :func:`paired_speedup`: the median of the
    rounds' ratios), with a percentile-bootstrap 95% interval."""

    ratio: float
    low: float
    high: float


def bootstrap_medians(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The medians (as ``np.median`` takes them) of ``resamples`` bootstrap resamples of ``values``, drawn in
    O(resamples) after one sort instead of O(resamples x n).

    A resample of size n is x_(ceil(n U_i)) for n uniforms U_i, and ceil(n u) is monotone, so its j-th smallest value
    is x_(ceil(n U_(j))), U_(j) the j-th order statistic of the uniforms: U_(j) ~ Beta(j, n - j + 1), and the next
    one U_(j+1) = U_(j) + (1 - U_(j)) Beta(1, n - j). Same distribution as resampling; a 50 000-round bench took
    3.8 s per model in the resampling bootstrap (2000 x n draws and partitions)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 1:
        return np.full(resamples, x[0])
    m = (n + 1) // 2                                   # the (lower) middle order statistic, 1-based
    lower = rng.beta(m, n - m + 1, resamples)

    def at(u: np.ndarray) -> np.ndarray:
        return x[np.clip(np.ceil(n * u).astype(np.int64), 1, n) - 1]

    if n % 2:
        return at(lower)
    upper = lower + (1.0 - lower) * rng.beta(1, n - m, resamples)
    return (at(lower) + at(upper)) / 2


def speedup(baseline: list[float] | np.ndarray, candidate: list[float] | np.ndarray, *, resamples: int = 2000,
            seed: int = 0, confidence: float = 0.95) -> Speedup:
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ratios = bootstrap_medians(b, resamples, rng) / bootstrap_medians(c, resamples, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return Speedup(float(np.median(b) / np.median(c)), float(low), float(high))


def paired_speedup(baseline: list[float] | np.ndarray, candidate: list[float] | np.ndarray, *,
                   resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> Speedup:
    """The median over rounds of baseline / candidate, the two times of a round taken back to back, with a
    percentile bootstrap over rounds.

    A busy stretch of a shared machine slows both runs of a round alike, so it cancels in the round's ratio; the
    ratio of two medians mixes rounds and moves with it (see ``onnxprune.latency.measure.paired_timing``). Falls
    back to :func:`speedup` when the two series are not one entry per round (different lengths)."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if len(b) != len(c) or len(b) == 0:
        return speedup(b, c, resamples=resamples, seed=seed, confidence=confidence)
    per_round = b / c
    ratios = bootstrap_medians(per_round, resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return Speedup(float(np.median(per_round)), float(low), float(high))
