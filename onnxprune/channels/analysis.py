"""Walk a graph once, apply each op's channel rule, and group coupled channels.

Result: :class:`ChannelAnalysis` with one :class:`ChannelGroup` per set of layers whose channels are coupled
(a residual stage is one group; a plain Conv-BN-ReLU is a group of its own). A group's *units* are the
channels that are kept or removed together. Groups that reach a graph input or output, or flow into an op
that cannot be mapped exactly, are frozen with the reason in words. Read-only: the graph is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import onnxprune.channels.rules  # noqa: F401  (registers the rules)
from onnxprune.channels.context import AnalysisContext, Source, SourceKind, static_dims
from onnxprune.channels.layout import TensorLayout, UnionFind
from onnxprune.channels.rules.base import rule_for
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import to_graph

SOURCE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together.

    ``units`` are element-root ids in a stable order (the first source's channel order); ``blocks`` lists,
    per grouped conv touching the group, a (groups x n) array of unit indices that must keep equally many.
    """

    id: str
    units: np.ndarray
    prunable: bool
    reason: str
    sources: tuple[str, ...]
    members: tuple[str, ...]
    blocks: tuple[np.ndarray, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.units.shape[0])

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "channels": self.channels, "prunable": self.prunable, "reason": self.reason,
                "sources": list(self.sources), "members": list(self.members),
                "blocks": [int(b.shape[0]) for b in self.blocks]}


@dataclass(frozen=True)
class ChannelAnalysis:
    """The channel groups of one graph. Read-only: ``graph`` is the graph it describes (imported for the
    analysis); pruning rewrites a graph of its own."""

    graph: gs.Graph
    groups: list[ChannelGroup]
    layouts: dict[str, TensorLayout]
    roots: np.ndarray                 # element id -> root id
    sources: list[Source]
    element_source: np.ndarray        # element id -> index into sources
    depthwise: list[gs.Node]
    consumers: list[tuple[gs.Node, str]]
    frozen: dict[int, str] = field(default_factory=dict)

    def group(self, group_id: str) -> ChannelGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(group_id)

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    @property
    def frozen_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if not g.prunable]


def analyze(model: onnx.ModelProto | gs.Graph, input_shapes: dict[str, tuple[int, ...]] | None = None
            ) -> ChannelAnalysis:
    """Channel dependency analysis of a normalized model (shapes inferred).

    ``input_shapes`` (``--input-shape``): where shape inference on the model as declared leaves a tensor's rank
    unknown, the rank inferred with these concrete inputs is used. Only ranks: a decision that depended on a
    concrete size would hold for that size alone, and the model stays dynamic.
    """
    graph = model if isinstance(model, gs.Graph) else to_graph(model)
    if input_shapes:
        fill_unknown_ranks(graph, input_shapes)
    ctx = AnalysisContext(graph)
    for inp in graph.inputs:
        dims = static_dims(inp)
        if dims is not None and len(dims) >= 2 and dims[1] is not None:
            elems = ctx.new_space(None, dims[1], SourceKind.INPUT, frozen=f"graph input {inp.name!r}", name=f"input:{inp.name}")
            ctx.set_layout(inp, TensorLayout(1, elems))
    for node in graph.nodes:
        if node.op in SOURCE_OPS or any(ctx.layout(t) is not None for t in node.inputs):
            rule_for(node).analyze(node, ctx)
    for out in graph.outputs:
        ctx.freeze(ctx.layout(out), f"reaches graph output {out.name!r}")
    return _build(graph, ctx)


def fill_unknown_ranks(graph: gs.Graph, input_shapes: dict[str, tuple[int, ...]]) -> int:
    """Give tensors of unknown rank the rank they have with ``input_shapes``; returns how many were filled."""
    unknown = {name: t for name, t in graph.tensors().items() if isinstance(t, gs.Variable) and name
               and t.shape is None}
    if not unknown:
        return 0
    from onnxprune.interface import fix_input_shapes

    try:
        fixed = fix_input_shapes(gs.export_onnx(graph, do_type_check=False), input_shapes)
    except OnnxPruneError:
        return 0
    filled = 0
    for vi in (*fixed.graph.value_info, *fixed.graph.output):
        t = unknown.get(vi.name)
        if t is not None and vi.type.tensor_type.HasField("shape"):
            t.shape = [None] * len(vi.type.tensor_type.shape.dim)
            filled += 1
    return filled


def _build(graph: gs.Graph, ctx: AnalysisContext) -> ChannelAnalysis:
    roots = ctx.uf.roots()
    element_source = np.asarray(ctx.element_source, dtype=np.int64)
    n_sources = len(ctx.sources)
    spaces = UnionFind()
    spaces.add(n_sources)
    coupled = np.flatnonzero(roots != np.arange(len(roots)))
    pairs = np.unique(np.stack([element_source[coupled], element_source[roots[coupled]]], axis=1), axis=0) \
        if len(coupled) else np.zeros((0, 2), dtype=np.int64)
    for a, b in pairs.tolist():
        spaces.union(a, b)
    space_root = np.asarray([spaces.find(s) for s in range(n_sources)], dtype=np.int64)
    group_of_element = space_root[element_source] if len(element_source) else element_source

    frozen_root: dict[int, str] = {}
    for e in sorted(ctx.frozen):
        frozen_root.setdefault(int(roots[e]), ctx.frozen[e])

    order = sorted(set(space_root.tolist()), key=lambda s: int(np.flatnonzero(space_root == s)[0]))
    unit_index: dict[int, tuple[int, int]] = {}  # root -> (group position, unit position)
    raw: list[dict[str, object]] = []
    for gi, s in enumerate(order):
        member_sources = [ctx.sources[i] for i in np.flatnonzero(space_root == s)]
        elems = np.concatenate([src.elems for src in member_sources])
        units = list(dict.fromkeys(roots[elems].tolist()))
        for ui, u in enumerate(units):
            unit_index[u] = (gi, ui)
        reasons = [frozen_root[u] for u in units if u in frozen_root]
        raw.append({"units": np.asarray(units, dtype=np.int64), "sources": member_sources, "reason": reasons[0]
                    if reasons else "", "blocks": []})

    for block in ctx.blocks:
        idx = [unit_index[int(roots[e])] for e in block.reshape(-1)]
        groups_hit = {g for g, _ in idx}
        if len(groups_hit) != 1:
            for g in groups_hit:
                raw[g]["reason"] = raw[g]["reason"] or "grouped conv spans several channel groups"
            continue
        g = groups_hit.pop()
        raw[g]["blocks"].append(np.asarray([u for _, u in idx], dtype=np.int64).reshape(block.shape))

    members: list[set[str]] = [set() for _ in raw]
    for node in graph.nodes:
        for t in (*node.inputs, *node.outputs):
            layout = ctx.layout(t)
            if layout is not None:
                for g in set(group_of_element[layout.elems].tolist()):
                    members[order.index(g)].add(node.name)

    groups = []
    for gi, r in enumerate(raw):
        sources = r["sources"]
        real = [s for s in sources if s.kind is not SourceKind.INPUT]
        reason = r["reason"] or ("" if real else "no layer defines these channels")
        if not reason and len(r["units"]) < 2:
            reason = "a single channel"
        gid = real[0].name if real else sources[0].name
        groups.append(ChannelGroup(gid or f"group{gi}", r["units"], not reason, reason,
                                   tuple(s.name for s in sources), tuple(sorted(members[gi])), tuple(r["blocks"])))
    return ChannelAnalysis(graph, groups, ctx.layouts, roots, ctx.sources, element_source, ctx.depthwise,
                           ctx.consumers, ctx.frozen)
