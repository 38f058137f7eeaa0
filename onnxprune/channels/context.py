"""What op rules see: the analysis state while the graph is walked, and the rewrite state while it is sliced."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.layout import TensorLayout, UnionFind
from onnxprune.graph import NameAllocator, constant_value


def rank_of(tensor: gs.Tensor) -> int | None:
    if isinstance(tensor, gs.Constant):
        return len(tensor.shape)
    return len(tensor.shape) if tensor.shape is not None else None


def static_dims(tensor: gs.Tensor) -> list[int | None] | None:
    """The tensor's shape with symbolic dims as None (None if the rank is unknown)."""
    if tensor.shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else None for d in tensor.shape]


class SourceKind(enum.StrEnum):
    """What defines a channel space: a layer's output channels, a graph input's, or channels a Pad inserts."""

    CONV = "conv"
    CONVTRANSPOSE = "convtranspose"
    DEPTHWISE = "depthwise"
    GEMM = "gemm"
    MATMUL = "matmul"
    PAD = "pad"
    INPUT = "input"


class Role(enum.StrEnum):
    """The part a node plays in a channel group (reported by ``inspect --explain``)."""

    SOURCE = "source"
    CONSUMER = "consumer"
    DEPTHWISE = "depthwise"
    PASSTHROUGH = "passthrough"
    JOIN = "join"
    CONCAT = "concat"
    SPLIT = "split"
    SLICE = "slice"
    PAD = "pad"
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    SHUFFLE = "shuffle"
    TRANSPOSE = "transpose"
    BARRIER = "barrier"


class ConvKind(enum.StrEnum):
    """A Conv/ConvTranspose by its ``group``: plain (1), depthwise (one filter per input channel), grouped."""

    PLAIN = "plain"
    DEPTHWISE = "depthwise"
    GROUPED = "grouped"


@dataclass
class Source:
    """A layer that defines output channels: its elements are the rows of its (reshaped) filters."""

    node: gs.Node | None  # None for a graph input
    name: str
    elems: np.ndarray
    kind: SourceKind


@dataclass
class AnalysisContext:
    graph: gs.Graph
    uf: UnionFind = field(default_factory=UnionFind)
    layouts: dict[str, TensorLayout] = field(default_factory=dict)
    frozen: dict[int, str] = field(default_factory=dict)        # element -> first reason
    sources: list[Source] = field(default_factory=list)
    element_source: list[int] = field(default_factory=list)      # element -> index into sources
    #: block constraints from grouped convs: each entry splits a list of elements into equal-size blocks that
    #: must keep equally many channels
    blocks: list[np.ndarray] = field(default_factory=list)
    #: per node name: the role it plays (for reports) and whether it carries per-channel parameters
    members: dict[str, Role] = field(default_factory=dict)
    depthwise: list[gs.Node] = field(default_factory=list)
    consumers: list[tuple[gs.Node, str]] = field(default_factory=list)  # (node, tensor name it reads channels of)

    # ---- layouts
    def layout(self, tensor: gs.Tensor | None) -> TensorLayout | None:
        if tensor is None or isinstance(tensor, gs.Constant):
            return None
        return self.layouts.get(tensor.name)

    def set_layout(self, tensor: gs.Tensor, layout: TensorLayout) -> None:
        self.layouts[tensor.name] = layout

    # ---- elements
    def new_space(self, node: gs.Node | None, size: int, kind: SourceKind, frozen: str | None = None,
                  name: str = "") -> np.ndarray:
        elems = self.uf.add(size)
        self.sources.append(Source(node, name or (node.name if node is not None else ""), elems, SourceKind(kind)))
        self.element_source.extend([len(self.sources) - 1] * size)
        if frozen:
            for e in elems:
                self.frozen.setdefault(int(e), frozen)
        return elems

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self.uf.union(x, y)

    def freeze(self, elems: np.ndarray | TensorLayout | None, reason: str) -> None:
        if elems is None:
            return
        values = elems.elems if isinstance(elems, TensorLayout) else elems
        for e in np.unique(values).tolist():
            self.frozen.setdefault(int(e), reason)

    def barrier(self, node: gs.Node, reason: str) -> None:
        """Freeze every channel that flows into ``node``; its outputs carry no tracked channels."""
        text = f"{node.op} {node.name!r}: {reason}"
        for t in node.inputs:
            self.freeze(self.layout(t), text)
        self.members[node.name] = Role.BARRIER

    def add_blocks(self, elems: np.ndarray, blocks: int) -> None:
        if blocks > 1:
            self.blocks.append(elems.reshape(blocks, -1))

    def member(self, node: gs.Node, role: Role | str) -> None:
        self.members.setdefault(node.name, Role(role))


@dataclass
class RewriteContext:
    """Slicing state: which elements are removed, and helpers that replace constants copy-on-write."""

    graph: gs.Graph
    names: NameAllocator
    layouts: dict[str, TensorLayout]
    removed: np.ndarray  # bool per element root id (indexed by element id after root lookup)
    roots: np.ndarray    # element id -> root id
    opset: int = 17

    def keep(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """Boolean keep-mask along ``tensor``'s channel axis, or None if it carries no tracked channels."""
        if tensor is None or isinstance(tensor, gs.Constant):
            return None
        layout = self.layouts.get(tensor.name)
        if layout is None:
            return None
        return ~self.removed[self.roots[layout.elems]]

    def axis(self, tensor: gs.Tensor) -> int:
        return self.layouts[tensor.name].axis

    def changed(self, tensor: gs.Tensor | None) -> bool:
        mask = self.keep(tensor)
        return mask is not None and not bool(mask.all())

    def set_const(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        old = node.inputs[index]
        hint = f"{old.name}_pruned" if old.name else f"{node.name}_in{index}"
        node.inputs[index] = gs.Constant(self.names.fresh(hint), np.ascontiguousarray(values))

    def slice_const(self, node: gs.Node, index: int, axis: int, mask: np.ndarray) -> None:
        """Keep the ``mask`` positions of constant input ``index`` along ``axis`` (broadcast dims of size 1 are
        left alone)."""
        value = constant_value(node.inputs[index])
        if value is None or value.ndim == 0 or value.shape[axis] == 1 or mask.all():
            return
        self.set_const(node, index, np.compress(mask, value, axis=axis))
