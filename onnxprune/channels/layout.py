"""Channel elements and their coupling.

Every output channel of a *source* layer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) and every
channel of a graph input is an *element* with an integer id. A tensor's :class:`TensorLayout` says, for each
position along its channel axis, which element it carries (a flattened tensor carries each element H*W times).
Ops that force two channels to be pruned together (a residual Add, an SE gating Mul, a depthwise conv) union
their elements; the union-find's components are the units that pruning keeps or removes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorLayout:
    """Which element each position of ``axis`` carries."""

    axis: int
    elems: np.ndarray  # int64, one entry per position along ``axis``

    def __len__(self) -> int:
        return int(self.elems.shape[0])

    def moved(self, axis: int) -> "TensorLayout":
        return TensorLayout(axis, self.elems)


class UnionFind:
    """Union-find over element ids, grown on demand (path halving, union by size)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.size.extend([1] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.parent)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra

    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64, count=len(self.parent))
