"""Layers with weights: Conv, ConvTranspose, Gemm, MatMul.

Each reads channels (consumer: its weight's input axis is sliced) and defines new output channels (source:
its filters are removed). Depthwise convs (group == Cin == Cout) instead pass channel i through to channel i;
grouped convs keep their per-group structure (every group keeps equally many input and output channels).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.context import (
    AnalysisContext,
    ConvKind,
    RewriteContext,
    Role,
    SourceKind,
    rank_of,
)
from onnxprune.channels.layout import TensorLayout
from onnxprune.channels.rules.base import OpRule, register
from onnxprune.graph import constant_value, optional_input


def _conv_kind(node: gs.Node, w: np.ndarray) -> ConvKind:
    group = int(node.attrs.get("group", 1))
    if group == 1:
        return ConvKind.PLAIN
    if node.op in ("Conv", "ConvTranspose") and w.shape[1] == 1 and w.shape[0] == group:
        return ConvKind.DEPTHWISE
    return ConvKind.GROUPED


def _in_channels(node: gs.Node, w: np.ndarray) -> int:
    group = int(node.attrs.get("group", 1))
    return w.shape[1] * group if node.op == "Conv" else w.shape[0]


def _out_channels(node: gs.Node, w: np.ndarray) -> int:
    group = int(node.attrs.get("group", 1))
    return w.shape[0] if node.op == "Conv" else w.shape[1] * group


def _blocks_keep(mask: np.ndarray, groups: int) -> list[np.ndarray]:
    """Per group, the kept positions relative to the group's block."""
    return [np.flatnonzero(b) for b in mask.reshape(groups, -1)]


@register("Conv", "ConvTranspose")
class ConvRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        w = constant_value(optional_input(node, 1))
        if w is None or w.ndim < 3:
            ctx.barrier(node, "weight is not a constant tensor")
            return
        x = node.inputs[0]
        layout = ctx.layout(x)
        cin, cout = _in_channels(node, w), _out_channels(node, w)
        if layout is not None and (layout.axis != 1 or len(layout) != cin):
            # what reaches the input is not its channels (an NHWC graph input transposed with a tracked H):
            # those stay, the layer's own output channels are still a source
            ctx.freeze(layout, f"{node.op} {node.name!r}: input channel axis does not match the weight")
            layout = None
        b = optional_input(node, 2)
        if b is not None and constant_value(b) is None:
            ctx.barrier(node, "bias is not constant")
            return
        kind = _conv_kind(node, w)
        group = int(node.attrs.get("group", 1))
        out = node.outputs[0]
        if kind is ConvKind.DEPTHWISE:
            if layout is None:
                elems = ctx.new_space(node, cout, SourceKind.DEPTHWISE,
                                      frozen=f"{node.op} {node.name!r}: depthwise conv on untracked channels")
                ctx.set_layout(out, TensorLayout(1, elems))
            else:
                ctx.set_layout(out, layout)
                ctx.depthwise.append(node)
            ctx.member(node, Role.DEPTHWISE)
            return
        if layout is not None:
            ctx.consumers.append((node, x.name))
            if kind is ConvKind.GROUPED:
                ctx.add_blocks(layout.elems, group)
        elems = ctx.new_space(node, cout, SourceKind(node.op.lower()))
        if kind is ConvKind.GROUPED:
            ctx.add_blocks(elems, group)
        ctx.set_layout(out, TensorLayout(1, elems))
        ctx.member(node, Role.SOURCE)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        x, out = node.inputs[0], node.outputs[0]
        if not (ctx.changed(x) or ctx.changed(out)):
            return
        w = constant_value(node.inputs[1])
        group = int(node.attrs.get("group", 1))
        kind = _conv_kind(node, w)
        keep_out = ctx.keep(out)
        keep_in = ctx.keep(x) if ctx.changed(x) else np.ones(_in_channels(node, w), bool)
        if kind is ConvKind.DEPTHWISE:
            w_new = w[keep_out]
            node.attrs["group"] = int(keep_out.sum())
        elif node.op == "Conv":
            if group == 1:
                w_new = w[keep_out][:, keep_in]
            else:
                rows = keep_out.reshape(group, -1)
                cols = _blocks_keep(keep_in, group)
                per = w.shape[0] // group
                w_new = np.concatenate([w[g * per:(g + 1) * per][rows[g]][:, cols[g]] for g in range(group)])
        else:  # ConvTranspose: weight (Cin, Cout/group, k...)
            if group == 1:
                w_new = w[keep_in][:, keep_out]
            else:
                rows = keep_in.reshape(group, -1)
                cols = _blocks_keep(keep_out, group)
                per = w.shape[0] // group
                w_new = np.concatenate([w[g * per:(g + 1) * per][rows[g]][:, cols[g]] for g in range(group)])
        ctx.set_const(node, 1, w_new)
        if optional_input(node, 2) is not None:
            ctx.slice_const(node, 2, 0, keep_out)

    def mask(self, node: gs.Node, ctx: RewriteContext) -> None:
        x = node.inputs[0]
        if not ctx.changed(x):
            return
        w = constant_value(node.inputs[1]).copy()
        group = int(node.attrs.get("group", 1))
        if _conv_kind(node, w) is ConvKind.DEPTHWISE:
            return
        drop = ~ctx.keep(x)
        if node.op == "ConvTranspose":
            w[drop] = 0
        elif group == 1:
            w[:, drop] = 0
        else:
            per = w.shape[0] // group
            for g, block in enumerate(drop.reshape(group, -1)):
                w[g * per:(g + 1) * per, block] = 0
        ctx.set_const(node, 1, w)


@register("Gemm")
class GemmRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        b = constant_value(optional_input(node, 1))
        c = optional_input(node, 2)
        if b is None or b.ndim != 2 or (c is not None and constant_value(c) is None):
            ctx.barrier(node, "B or C is not a constant")
            return
        a = node.inputs[0]
        layout = ctx.layout(a)
        trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        k = b.shape[1] if trans_b else b.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        if layout is not None and (layout.axis != (0 if trans_a else 1) or len(layout) != k):
            ctx.freeze(layout, f"Gemm {node.name!r}: input channel axis does not match B")
            layout = None
        if layout is not None:
            ctx.consumers.append((node, a.name))
        ctx.set_layout(node.outputs[0], TensorLayout(1, ctx.new_space(node, n, SourceKind.GEMM)))
        ctx.member(node, Role.SOURCE)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        a, out = node.inputs[0], node.outputs[0]
        if not (ctx.changed(a) or ctx.changed(out)):
            return
        b = constant_value(node.inputs[1])
        trans_b = int(node.attrs.get("transB", 0))
        k_axis, n_axis = (1, 0) if trans_b else (0, 1)
        keep_in = ctx.keep(a) if ctx.changed(a) else None  # a frozen input may not even be on the K axis
        keep_out = ctx.keep(out)
        if keep_in is not None:
            b = np.compress(keep_in, b, axis=k_axis)
        b = np.compress(keep_out, b, axis=n_axis)
        ctx.set_const(node, 1, b)
        c = constant_value(optional_input(node, 2))
        if c is not None and c.ndim >= 1:
            ctx.slice_const(node, 2, c.ndim - 1, keep_out)

    def mask(self, node: gs.Node, ctx: RewriteContext) -> None:
        a = node.inputs[0]
        if not ctx.changed(a):
            return
        b = constant_value(node.inputs[1]).copy()
        drop = ~ctx.keep(a)
        if int(node.attrs.get("transB", 0)):
            b[:, drop] = 0
        else:
            b[drop] = 0
        ctx.set_const(node, 1, b)


@register("MatMul")
class MatMulRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        b = constant_value(node.inputs[1])
        a = node.inputs[0]
        rank = rank_of(a)
        if b is None or b.ndim != 2 or rank is None or rank < 2:
            ctx.barrier(node, "not activation @ constant 2-D weight")
            return
        layout = ctx.layout(a)
        if layout is not None and (layout.axis != rank - 1 or len(layout) != b.shape[0]):
            ctx.freeze(layout, f"MatMul {node.name!r}: channels are not on the contracted (last) axis")
            layout = None
        if layout is not None:
            ctx.consumers.append((node, a.name))
        ctx.set_layout(node.outputs[0], TensorLayout(rank - 1, ctx.new_space(node, b.shape[1], SourceKind.MATMUL)))
        ctx.member(node, Role.SOURCE)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        a, out = node.inputs[0], node.outputs[0]
        if not (ctx.changed(a) or ctx.changed(out)):
            return
        b = constant_value(node.inputs[1])
        keep_in = ctx.keep(a) if ctx.changed(a) else None
        if keep_in is not None:
            b = b[keep_in]
        ctx.set_const(node, 1, b[:, ctx.keep(out)])

    def mask(self, node: gs.Node, ctx: RewriteContext) -> None:
        a = node.inputs[0]
        if not ctx.changed(a):
            return
        b = constant_value(node.inputs[1]).copy()
        b[~ctx.keep(a)] = 0
        ctx.set_const(node, 1, b)


@register("LSTM", "GRU", "RNN")
class RecurrentRule(OpRule):
    """A recurrent layer reads its input features (the last axis of X) through W (num_directions, gates *
    hidden, input_size): a consumer, whose W columns are sliced. Its hidden state is recurrent (R mixes every
    hidden unit into the next step), so its outputs carry no prunable channels."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x = node.inputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        w = constant_value(optional_input(node, 1))
        if w is None or w.ndim != 3:
            ctx.barrier(node, "W is not a constant tensor")
            return
        if layout.axis != 2 or len(layout) != w.shape[2]:
            ctx.barrier(node, "channels are not the input feature axis")
            return
        ctx.consumers.append((node, x.name))
        ctx.member(node, Role.CONSUMER)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        if keep is not None and not keep.all():
            ctx.slice_const(node, 1, 2, keep)

    def mask(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        if keep is not None and not keep.all():
            w = constant_value(node.inputs[1]).copy()
            w[:, :, ~keep] = 0
            ctx.set_const(node, 1, w)
