"""Per-layer weight sharing by 1-D k-means (Han et al., ICLR 2016, §3).

``kmeans_1d`` clusters a layer's non-zero weights into ``k`` centroids by Lloyd's algorithm; in one dimension
the assignment step is a binary search between sorted centroids, so a layer of millions of weights takes
milliseconds per iteration. Initializations (the paper compares the three; linear is its default and best):

- ``linear``: ``k`` points evenly spaced over [min, max] (keeps the rare large weights, which matter most);
- ``density``: the ``k`` quantiles of the weights (the CDF's y-axis evenly spaced);
- ``random``: ``k`` distinct weights drawn at random (Forgy), seeded.

A layer with at most ``k`` distinct values is kept exactly (its values are the codebook).
"""

from __future__ import annotations

import enum

import numpy as np


class Init(enum.Enum):
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"


def _initial(values: np.ndarray, k: int, init: Init, seed: int) -> np.ndarray:
    if init is Init.LINEAR:
        return np.linspace(values.min(), values.max(), k)
    if init is Init.DENSITY:
        return np.quantile(values, np.linspace(0.0, 1.0, k))
    unique = np.unique(values)
    return np.random.default_rng(seed).choice(unique, size=k, replace=False)


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (``centroids`` sorted ascending)."""
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def kmeans_1d(values: np.ndarray, k: int, init: Init = Init.LINEAR, seed: int = 0,
              iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Sorted centroids (float64, at most ``k``) and each value's centroid index."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    unique = np.unique(v)
    if unique.size <= k:
        return unique, np.searchsorted(unique, v)
    centroids = np.sort(_initial(v, k, init, seed))
    labels = assign(v, centroids)
    for _ in range(iterations):
        counts = np.bincount(labels, minlength=centroids.size)
        sums = np.bincount(labels, weights=v, minlength=centroids.size)
        filled = counts > 0
        new = centroids.copy()
        new[filled] = sums[filled] / counts[filled]   # an empty cluster keeps its centroid
        new = np.sort(new)
        new_labels = assign(v, new)
        centroids = new
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    used = np.unique(labels)  # drop centroids no value maps to
    centroids = centroids[used]
    return centroids, assign(v, centroids)
