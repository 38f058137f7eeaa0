"""Channel-wise ops: activations, normalizations with per-channel parameters, and elementwise arithmetic.

Unary ops pass the layout through. Binary/variadic ops (Add, Sub, Mul, Div, Max, Min, Pow, Sum, Mean) align
their operands by broadcasting: two tracked operands with the same channel count are *joined* (their
channels are pruned together: residual Add, SE gating Mul, SiLU's x * sigmoid(x)); a constant operand is
scalar-like (left alone) or per-channel (sliced); anything else freezes the channels involved.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.channels.context import (
    AnalysisContext,
    RewriteContext,
    Role,
    rank_of,
    static_dims,
)
from onnxprune.channels.layout import TensorLayout
from onnxprune.channels.rules.base import OpRule, data_inputs, register
from onnxprune.graph import constant_value

UNARY = ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
         "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Identity", "Cast", "CastLike", "Neg", "Abs", "Exp",
         "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Clip", "Dropout", "Relu6")


def passthrough(node: gs.Node, ctx: AnalysisContext, role: Role = Role.PASSTHROUGH) -> None:
    layout = ctx.layout(node.inputs[0])
    if layout is None:
        return
    for out in node.outputs:
        if out.name:
            ctx.set_layout(out, layout)
    ctx.member(node, role)


@register(*UNARY)
class UnaryRule(OpRule):
    """Elementwise on one tensor (extra inputs such as Clip's bounds or Dropout's ratio are scalars)."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        if any(ctx.layout(t) is not None for t in data_inputs(node)[1:]):
            ctx.barrier(node, "a scalar parameter carries channels")
            return
        passthrough(node, ctx)


@register("BatchNormalization", "InstanceNormalization")
class NormRule(OpRule):
    """Per-channel statistics and affine parameters (inputs 1..4 / 1..2) are sliced with the channels."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        if layout.axis != 1:
            ctx.barrier(node, "channels are not on axis 1")
        elif any(o.outputs for o in node.outputs[1:]):
            ctx.barrier(node, "running statistics outputs are used (training mode)")
        elif any(constant_value(t) is None for t in data_inputs(node)[1:]):
            ctx.barrier(node, "parameters are not constant")
        else:
            ctx.set_layout(node.outputs[0], layout)
            ctx.member(node, Role.PASSTHROUGH)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        if keep is not None and not keep.all():
            for i in range(1, len(data_inputs(node))):
                ctx.slice_const(node, i, 0, keep)


@register("LayerNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization",
          "Softmax", "LogSoftmax", "Hardmax")
class CrossChannelNormRule(OpRule):
    """Ops that normalize over a set of axes. Over other axes than the channel one they pass channels through
    (LayerNormalization's scale and bias then index the normalized axes, not channels). Over the channel axis
    they mix channels: removing a channel changes the statistics (mean, variance, sum) every other channel is
    normalized with, even when the removed channel is zero, so the channels are frozen - and passed through, so
    the freeze reaches every layer coupled to them (a ConvNeXt residual stream) with this reason."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        axes = self._normalized_axes(node, int(ctx.graph.opset or 17))
        if axes is None:
            ctx.barrier(node, "rank unknown")
            return
        if any(o.outputs for o in node.outputs[1:]):
            ctx.barrier(node, "its statistics outputs are used")
            return
        if layout.axis in axes:
            ctx.freeze(layout, f"{node.op} {node.name!r} normalizes across the channel axis: removing a channel "
                               f"changes the statistics of the others")
        passthrough(node, ctx)

    @staticmethod
    def _normalized_axes(node: gs.Node, opset: int) -> set[int] | None:
        rank = rank_of(node.inputs[0])
        if rank is None:
            return None
        if node.op == "GroupNormalization":
            return set(range(1, rank))  # groups of channels together with their spatial dims
        if node.op == "MeanVarianceNormalization":
            return {a % rank for a in node.attrs.get("axes", [0, 2, 3])}
        coerced = node.op in ("Softmax", "LogSoftmax", "Hardmax") and opset < 13  # 2-D view from ``axis`` on
        axis = int(node.attrs.get("axis", 1 if coerced else -1)) % rank
        if node.op == "LayerNormalization" or coerced:
            return set(range(axis, rank))
        return {axis}


def _aligned_index(tensor: gs.Tensor, out_rank: int, out_axis: int) -> int:
    """Index of the output's channel axis within ``tensor``'s dims under numpy broadcasting (< 0: absent)."""
    return rank_of(tensor) - (out_rank - out_axis)


@register("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu")
class BroadcastRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        inputs = data_inputs(node)
        tracked = [(t, ctx.layout(t)) for t in inputs if ctx.layout(t) is not None]
        if not tracked:
            return
        out = node.outputs[0]
        out_rank = rank_of(out)
        if out_rank is None or any(rank_of(t) is None for t in inputs):
            ctx.barrier(node, "operand ranks unknown")
            return
        axes = {out_rank - (rank_of(t) - lay.axis) for t, lay in tracked}
        if len(axes) != 1:
            ctx.barrier(node, "the operands' channel axes do not line up")
            return
        out_axis = axes.pop()
        base = max((lay for _, lay in tracked), key=len)
        channels = len(base)
        for t in inputs:
            lay = ctx.layout(t)
            if lay is not None:
                if len(lay) == channels:
                    ctx.union(base.elems, lay.elems)
                elif len(lay) == 1:
                    ctx.freeze(lay, f"{node.op} {node.name!r}: broadcast along the channel axis")
                else:
                    ctx.barrier(node, "operands have different channel counts")
                    return
                continue
            idx = _aligned_index(t, out_rank, out_axis)
            dims = static_dims(t)
            dim = dims[idx] if dims is not None and idx >= 0 else 1
            if dim == 1:
                continue
            if dim == channels and constant_value(t) is not None:
                continue  # per-channel constant: sliced on rewrite
            ctx.freeze(base, f"{node.op} {node.name!r}: combined with a tensor whose channels are not tracked")
        ctx.set_layout(out, TensorLayout(out_axis, base.elems))
        ctx.member(node, Role.JOIN if len(tracked) > 1 else Role.PASSTHROUGH)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        out = node.outputs[0]
        keep = ctx.keep(out)
        if keep is None or keep.all():
            return
        out_rank, out_axis = rank_of(out), ctx.axis(out)
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant) or (ctx.keep(t) is None and constant_value(t) is not None):
                value = constant_value(t)
                idx = value.ndim - (out_rank - out_axis)
                if idx >= 0 and value.shape[idx] == len(keep):
                    ctx.slice_const(node, i, idx, keep)
