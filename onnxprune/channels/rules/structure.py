"""Ops that move, combine or split channels: pooling, reductions, resize, pad, slice, concat, split, flatten,
reshape, squeeze/unsqueeze, transpose, and Shape (which is harmless only if it never reads the channel count).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.context import AnalysisContext, RewriteContext, rank_of, static_dims
from onnxprune.channels.layout import TensorLayout
from onnxprune.channels.rules.base import OpRule, data_inputs, register
from onnxprune.channels.rules.elementwise import passthrough
from onnxprune.graph import constant_value, optional_input, producer


def _ints(tensor: gs.Tensor | None) -> list[int] | None:
    value = constant_value(tensor)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _axes(node: gs.Node, rank: int, input_index: int = 1) -> list[int] | None:
    """Axes from the ``axes`` attribute (older opsets) or input (newer); None if not constant."""
    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif optional_input(node, input_index) is not None:
        axes = _ints(node.inputs[input_index])
        if axes is None:
            return None
    else:
        return []
    return [a % rank for a in axes]


@register("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")
class PoolRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is not None and layout.axis != 1:
            ctx.barrier(node, "channels are not on axis 1")
            return
        passthrough(node, ctx)


@register("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd",
          "ReduceLogSumExp", "ReduceSumSquare")
class ReduceRule(OpRule):
    """Reductions over non-channel axes keep channels; over the channel axis they are barriers."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x = node.inputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        rank = rank_of(x)
        axes = _axes(node, rank) if rank is not None else None
        if axes is None:
            ctx.barrier(node, "reduction axes unknown")
            return
        if not axes:
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                passthrough(node, ctx)
            else:
                ctx.barrier(node, "reduces over all axes")
            return
        if layout.axis in axes:
            ctx.barrier(node, "reduces over the channel axis")
            return
        keepdims = int(node.attrs.get("keepdims", 1))
        axis = layout.axis if keepdims else layout.axis - sum(a < layout.axis for a in axes)
        ctx.set_layout(node.outputs[0], layout.moved(axis))
        ctx.member(node, "passthrough")


@register("Resize", "Upsample")
class ResizeRule(OpRule):
    """Spatial resize; a constant ``sizes`` input states the channel count and is rewritten."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        scales_index = 1 if node.op == "Upsample" else 2
        scales = constant_value(optional_input(node, scales_index))
        sizes = optional_input(node, 3) if node.op == "Resize" else None
        if scales is not None and scales.size and float(scales.reshape(-1)[layout.axis]) != 1.0:
            ctx.barrier(node, "scales the channel axis")
        elif sizes is not None and _ints(sizes) is None:
            ctx.barrier(node, "sizes computed at run time")
        elif scales is None and sizes is None and optional_input(node, scales_index) is not None:
            ctx.barrier(node, "scales computed at run time")
        else:
            passthrough(node, ctx)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        sizes = optional_input(node, 3) if node.op == "Resize" else None
        if keep is None or sizes is None or _ints(sizes) is None:
            return
        values = np.asarray(constant_value(sizes)).copy()
        values[ctx.axis(node.inputs[0])] = int(keep.sum())
        ctx.set_const(node, 3, values)


@register("Pad")
class PadRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        pads = list(node.attrs["pads"]) if "pads" in node.attrs else _ints(optional_input(node, 1))
        axes = _axes(node, rank, 3) if rank is not None else None
        if pads is None or axes is None:
            ctx.barrier(node, "pads computed at run time")
            return
        axes = axes or list(range(rank))
        n = len(axes)
        for i, a in enumerate(axes):
            if a == layout.axis and (pads[i] != 0 or pads[i + n] != 0):
                ctx.barrier(node, "pads the channel axis")
                return
        passthrough(node, ctx)


@register("Slice")
class SliceRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        starts = _ints(optional_input(node, 1))
        axes = _axes(node, rank, 3) if rank is not None else None
        if starts is None or axes is None:
            ctx.barrier(node, "slice parameters computed at run time")
            return
        axes = axes or list(range(len(starts)))
        if layout.axis in axes:
            ctx.barrier(node, "slices the channel axis")
            return
        passthrough(node, ctx)


@register("Concat")
class ConcatRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        inputs = data_inputs(node)
        layouts = [ctx.layout(t) for t in inputs]
        if all(lay is None for lay in layouts):
            return
        rank = rank_of(node.outputs[0])
        axis = int(node.attrs["axis"]) % rank if rank is not None else None
        tracked_axes = {lay.axis for lay in layouts if lay is not None}
        if axis is None or len(tracked_axes) != 1:
            ctx.barrier(node, "operand channel axes differ")
            return
        channel_axis = tracked_axes.pop()
        if axis == channel_axis:
            if any(lay is None for lay in layouts):
                ctx.barrier(node, "concatenates tracked channels with untracked ones")
                return
            elems = np.concatenate([lay.elems for lay in layouts])
            ctx.set_layout(node.outputs[0], TensorLayout(axis, elems))
            ctx.member(node, "concat")
            return
        first = next(lay for lay in layouts if lay is not None)
        if any(lay is None or len(lay) != len(first) for lay in layouts):
            ctx.barrier(node, "concatenates along another axis with differing channels")
            return
        for lay in layouts:
            ctx.union(first.elems, lay.elems)
        ctx.set_layout(node.outputs[0], first)
        ctx.member(node, "join")


@register("Split")
class SplitRule(OpRule):
    """Split along the channel axis (sizes from the ``split`` input/attribute, or equal parts)."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        axis = int(node.attrs.get("axis", 0)) % rank if rank is not None else None
        if axis is None:
            ctx.barrier(node, "rank unknown")
            return
        if axis != layout.axis:
            passthrough(node, ctx)
            return
        sizes = self._sizes(node, len(layout))
        if sizes is None:
            ctx.barrier(node, "split sizes computed at run time")
            return
        offsets = np.cumsum([0] + sizes)
        for i, out in enumerate(node.outputs):
            ctx.set_layout(out, TensorLayout(axis, layout.elems[offsets[i]:offsets[i + 1]]))
        ctx.member(node, "split")

    @staticmethod
    def _sizes(node: gs.Node, total: int) -> list[int] | None:
        if "split" in node.attrs:
            return list(node.attrs["split"])
        if optional_input(node, 1) is not None:
            return _ints(node.inputs[1])
        n = len(node.outputs)
        if total % n:
            return None
        return [total // n] * n

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        if not ctx.changed(node.inputs[0]) or ctx.axis(node.inputs[0]) != int(node.attrs.get("axis", 0)) % \
                rank_of(node.inputs[0]):
            return
        sizes = [int(ctx.keep(o).sum()) for o in node.outputs]
        if "split" in node.attrs:
            node.attrs["split"] = sizes
        elif optional_input(node, 1) is not None:
            ctx.set_const(node, 1, np.asarray(sizes, dtype=np.int64))
        elif len(set(sizes)) != 1:  # an equal split is no longer equal: state the sizes explicitly
            node.attrs.pop("num_outputs", None)
            if ctx.opset < 13:
                node.attrs["split"] = sizes
            else:
                node.inputs.append(gs.Constant(ctx.names.fresh(f"{node.name}_split"),
                                               np.asarray(sizes, dtype=np.int64)))


def _is_batch(dim: object) -> bool:
    return not (isinstance(dim, int) and dim > 1)


class _FlattenLike:
    """(N, C, s...) -> (N, C*prod(s)) where the trailing dims are static: each channel owns prod(s)
    consecutive positions of the flattened axis."""

    @staticmethod
    def analyze(node: gs.Node, ctx: AnalysisContext, layout: TensorLayout) -> bool:
        x, out = node.inputs[0], node.outputs[0]
        dims, out_dims = static_dims(x), static_dims(out)
        if dims is None or out_dims is None or len(out_dims) != 2 or layout.axis != 1:
            return False
        spatial = dims[2:]
        if any(d is None for d in spatial):
            return False
        per_channel = int(np.prod(spatial, dtype=np.int64))
        if out_dims[1] is not None and out_dims[1] != per_channel * len(layout):
            return False
        ctx.set_layout(out, TensorLayout(1, np.repeat(layout.elems, per_channel)))
        return True


@register("Flatten")
class FlattenRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        axis = int(node.attrs.get("axis", 1))
        if rank is not None and axis % max(rank, 1) == 1 and _FlattenLike.analyze(node, ctx, layout):
            ctx.member(node, "flatten")
        else:
            ctx.barrier(node, "flattens channels with dynamic or leading dims")


def _shape_entries(tensor: gs.Tensor, depth: int = 0) -> list[object] | None:
    """The target-shape vector of a Reshape, entry by entry: ints where constant, ("dim", k) for a dim read
    from another tensor's shape, None where unknown. None when the structure cannot be followed."""
    value = constant_value(tensor)
    if value is not None:
        return [int(v) for v in np.asarray(value).reshape(-1)]
    node = producer(tensor)
    if node is None or depth > 8:
        return None
    if node.op in ("Cast", "Identity", "Squeeze", "Unsqueeze"):
        return _shape_entries(node.inputs[0], depth + 1)
    if node.op == "Concat":
        parts = [_shape_entries(t, depth + 1) for t in node.inputs]
        return None if any(p is None for p in parts) else [x for p in parts for x in p]
    if node.op == "Gather" and producer(node.inputs[0]) is not None and producer(node.inputs[0]).op == "Shape":
        idx = _ints(node.inputs[1])
        return None if idx is None else [("dim", i) for i in idx]
    return None


@register("Reshape")
class ReshapeRule(OpRule):
    """Two exact patterns: flatten (N, C, H, W) -> (N, C*H*W) before a Gemm/MatMul, and moving singleton dims
    around the channel axis ((N, C, 1, 1) <-> (N, C), as in SE blocks). The target shape must be constant or
    built from the batch dim and constants; an explicit channel count in it is rewritten."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x, out = node.inputs[0], node.outputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        entries = _shape_entries(node.inputs[1])
        dims, out_dims = static_dims(x), static_dims(out)
        if entries is None or dims is None or out_dims is None or len(entries) != len(out_dims):
            ctx.barrier(node, "target shape computed at run time")
            return
        channel_entry = entries[1] if len(entries) > 1 else None
        if len(entries) < 2 or not (channel_entry == -1 or isinstance(channel_entry, int) and channel_entry > 0):
            ctx.barrier(node, "target shape does not state the channel dim as a constant or -1")
            return
        if not _is_batch(dims[0]) or not (entries[0] in (0, -1) or entries[0] == ("dim", 0)
                                           or entries[0] == dims[0]):
            ctx.barrier(node, "leading dim is not the batch")
            return
        if _FlattenLike.analyze(node, ctx, layout):
            ctx.member(node, "flatten")
            return
        # singleton moves: every non-batch, non-channel dim is 1 on both sides
        if layout.axis == 1 and all(d == 1 for d in dims[2:]) and len(out_dims) >= 2 \
                and out_dims[1] in (len(layout), None) and all(d == 1 for d in out_dims[2:]):
            ctx.set_layout(out, layout.moved(1))
            ctx.member(node, "reshape")
            return
        ctx.barrier(node, "reshape mixes the channel axis with others")

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.outputs[0])
        value = constant_value(node.inputs[1])
        if keep is None or keep.all() or value is None:
            return
        value = np.asarray(value).copy()
        if value[1] > 0:
            value[1] = int(keep.sum())
            ctx.set_const(node, 1, value)


@register("Squeeze", "Unsqueeze")
class SqueezeRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x, out = node.inputs[0], node.outputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        rank, out_rank = rank_of(x), rank_of(out)
        if rank is None or out_rank is None:
            ctx.barrier(node, "rank unknown")
            return
        axes = _axes(node, rank if node.op == "Squeeze" else out_rank)
        if axes is None or (node.op == "Squeeze" and not axes):
            ctx.barrier(node, "axes unknown")
            return
        if node.op == "Squeeze":
            if layout.axis in axes:
                ctx.barrier(node, "squeezes the channel axis")
                return
            axis = layout.axis - sum(a < layout.axis for a in axes)
        else:
            kept_positions = [i for i in range(out_rank) if i not in axes]
            axis = kept_positions[layout.axis]
        ctx.set_layout(out, layout.moved(axis))
        ctx.member(node, "reshape")


@register("Transpose")
class TransposeRule(OpRule):
    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x = node.inputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        rank = rank_of(x)
        perm = list(node.attrs.get("perm", [])) or (list(range(rank))[::-1] if rank is not None else None)
        if perm is None:
            ctx.barrier(node, "rank unknown")
            return
        ctx.set_layout(node.outputs[0], layout.moved(perm.index(layout.axis)))
        ctx.member(node, "transpose")


@register("Shape")
class ShapeRule(OpRule):
    """Reading a tracked tensor's shape is fine while the channel dim itself is never used."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        start = int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        if rank is None:
            ctx.barrier(node, "rank unknown")
            return
        positions = list(range(rank))[start:end]
        if layout.axis not in positions:
            return
        channel_index = positions.index(layout.axis)
        for user in node.outputs[0].outputs:
            idx = _ints(user.inputs[1]) if user.op == "Gather" and len(user.inputs) > 1 else None
            if idx is None or any(i % len(positions) == channel_index for i in idx):
                ctx.freeze(layout, f"Shape {node.name!r}: the channel count is read at run time")
                return
