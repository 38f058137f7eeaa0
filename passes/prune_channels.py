"""Remove channels according to a :class:`~onnxprune.plan.PruningPlan` and propagate to every consumer.

Rule: the graph is analysed again (``onnxprune.channels``), the plan's groups are matched by id and channel
count, and every node's channel rule slices what depends on the removed channels: producer filters and
biases, BatchNorm/affine parameters, depthwise weights and ``group``, consumer weights on their input axis
(Gemm rows in channel x spatial blocks after a Flatten), Split sizes, Reshape and Resize shape constants.
Shapes are cleared and re-inferred afterwards. Frozen groups are never touched; a plan that would prune one
is refused.

:class:`MaskRemovedChannels` is the verification oracle: instead of slicing, it zeroes every consumer weight
that reads a removed channel. The pruned model must equal the masked one within fp32 rounding.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.channels import ChannelAnalysis, analyze
from onnxprune.channels.context import RewriteContext
from onnxprune.channels.rules import OpRule, rule_for
from onnxprune.graph import NameAllocator
from onnxprune.pass_infra import Finding, GraphPass, PassResult
from onnxprune.plan import PruningPlan


def _context(graph: gs.Graph, plan: PruningPlan, analysis: ChannelAnalysis | None,
             input_shapes: dict[str, tuple[int, ...]] | None) -> RewriteContext | None:
    if analysis is None or analysis.graph is not graph:
        analysis = analyze(graph, input_shapes)
    removed = plan.removed_roots(analysis)
    if not removed.any():
        return None
    return RewriteContext(graph, NameAllocator(graph), analysis.layouts, removed, analysis.roots,
                          opset=int(graph.opset or 17))


class _PlanPass(GraphPass):
    """Runs one method of every node's channel rule under a plan."""

    def __init__(self, plan: PruningPlan, analysis: ChannelAnalysis | None = None,
                 input_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        """``analysis`` of the very graph the pass will get saves analysing it again; otherwise it is analysed
        with ``input_shapes`` (the ``--input-shape`` the plan was made with)."""
        self.plan = plan
        self.analysis = analysis
        self.input_shapes = input_shapes

    def apply(self, rule: OpRule, node: gs.Node, ctx: RewriteContext) -> None:
        raise NotImplementedError

    def requires(self, graph: gs.Graph) -> None:
        """The plan fits this graph (its groups exist with these channel counts, none frozen is pruned):
        :class:`~onnxprune.errors.PreconditionError` otherwise, before anything is rewritten."""
        self._ready = (graph, _context(graph, self.plan, self.analysis, self.input_shapes))

    def call(self, graph: gs.Graph) -> PassResult:
        ready = getattr(self, "_ready", None)
        ctx = ready[1] if ready is not None and ready[0] is graph else \
            _context(graph, self.plan, self.analysis, self.input_shapes)
        self._ready = None
        if ctx is None:
            return PassResult(graph, False)
        for node in list(graph.nodes):
            self.apply(rule_for(node), node, ctx)
        findings = tuple(Finding(g.id, "group", True, f"kept {len(g.keep)} of {g.channels} channels")
                         for g in self.plan.groups if g.removed)
        return PassResult(graph, True, findings)


class PruneChannels(_PlanPass):
    name = "prune-channels"
    changes_shapes = True

    def apply(self, rule: OpRule, node: gs.Node, ctx: RewriteContext) -> None:
        rule.rewrite(node, ctx)


class MaskRemovedChannels(_PlanPass):
    """Zero the weights that read removed channels (the reference ``--verify`` compares against)."""

    name = "mask-removed-channels"

    def apply(self, rule: OpRule, node: gs.Node, ctx: RewriteContext) -> None:
        rule.mask(node, ctx)
