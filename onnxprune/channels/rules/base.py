"""The op-rule registry: how each op couples the channel axes of its inputs and outputs.

A rule is registered per (domain, op_type). ``analyze`` sets output layouts, unions coupled elements and
freezes what it cannot map exactly; ``rewrite`` slices the node's parameters once the plan is known;
``mask`` zeroes the weights that read removed channels (the ``--verify`` oracle). Ops without a rule are
barriers: every channel flowing into them is frozen, with the op named in the reason.
"""

from __future__ import annotations

from typing import Callable

import onnx_graphsurgeon as gs

from onnxprune.channels.context import AnalysisContext, RewriteContext


class OpRule:
    """Base rule: a barrier."""

    reason = "no channel rule for this op"

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        ctx.barrier(node, self.reason)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        """Slice the node's channel-dependent parameters (default: none)."""

    def mask(self, node: gs.Node, ctx: RewriteContext) -> None:
        """Zero the weights that read removed channels (default: none; only reducing layers have any)."""


RULES: dict[tuple[str, str], OpRule] = {}
BARRIER = OpRule()


def register(*op_types: str, domain: str = "") -> Callable[[type[OpRule]], type[OpRule]]:
    def wrap(cls: type[OpRule]) -> type[OpRule]:
        instance = cls()
        for op in op_types:
            RULES[(domain, op)] = instance
        return cls
    return wrap


def rule_for(node: gs.Node) -> OpRule:
    domain = "" if node.domain in (None, "", "ai.onnx") else node.domain
    if any(node.subgraphs()):
        return BARRIER
    return RULES.get((domain, node.op), BARRIER)


def data_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if not (isinstance(t, gs.Variable) and t.name == "")]
