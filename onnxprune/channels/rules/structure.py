"""Ops that move, combine or split channels: pooling, reductions, resize, pad, slice, concat, split, flatten,
reshape, squeeze/unsqueeze, transpose, and Shape (which is harmless only if it never reads the channel count).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.context import (
    AnalysisContext,
    RewriteContext,
    Role,
    SourceKind,
    rank_of,
    static_dims,
)
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
        ctx.member(node, Role.PASSTHROUGH)


@register("Resize", "Upsample")
class ResizeRule(OpRule):
    """Spatial resize. ``sizes`` states the channel count: a constant is rewritten; computed sizes (an FPN/U-Net
    upsampling to another tensor's size: ``Concat(Shape(x)[:2], Shape(skip)[2:])``) are exact when the channel
    entry is read from a tensor carrying the same channels (so it follows the pruning) and no channel count is
    used as a spatial size."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        scales_index = 1 if node.op == "Upsample" else 2
        scales = constant_value(optional_input(node, scales_index))
        sizes = optional_input(node, 3) if node.op == "Resize" else None
        entries = _shape_entries(sizes) if sizes is not None and _ints(sizes) is None else None
        if scales is not None and scales.size and float(scales.reshape(-1)[layout.axis]) != 1.0:
            ctx.barrier(node, "scales the channel axis")
        elif sizes is not None and _ints(sizes) is None and (entries is None or "axes" in node.attrs
                                                           or not channel_entry_ok(ctx, entries, layout)):
            ctx.barrier(node, "sizes computed at run time from something else than these channels")
        elif scales is None and sizes is None and optional_input(node, scales_index) is not None:
            ctx.barrier(node, "scales computed at run time")
        else:
            passthrough(node, ctx)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        sizes = optional_input(node, 3) if node.op == "Resize" else None
        if keep is None or keep.all() or sizes is None:
            return
        set_target_entry(node, 3, ctx.axis(node.inputs[0]), int(keep.sum()), ctx)


@register("Pad")
class PadRule(OpRule):
    """Padding of non-channel axes passes channels through. Constant padding of the channel axis (ResNet option-A
    shortcuts: zero channels around the input) maps the input channels to the middle positions and gives each
    padded position an element of its own; removing a padded position shrinks the pads."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        span = self._channel_pads(node, layout)
        if isinstance(span, str):
            ctx.barrier(node, span)
            return
        before, after = span
        if not before and not after:
            passthrough(node, ctx)
            return
        padded = ctx.new_space(node, before + after, SourceKind.PAD)
        ctx.set_layout(node.outputs[0], TensorLayout(layout.axis, np.concatenate(
            [padded[:before], layout.elems, padded[before:]])))
        ctx.member(node, Role.PAD)

    @staticmethod
    def _channel_pads(node: gs.Node, layout: TensorLayout) -> tuple[int, int] | str:
        rank = rank_of(node.inputs[0])
        pads = list(node.attrs["pads"]) if "pads" in node.attrs else _ints(optional_input(node, 1))
        axes = _axes(node, rank, 3) if rank is not None else None
        if pads is None or axes is None:
            return "pads computed at run time"
        axes = axes or list(range(rank))
        n = len(axes)
        if layout.axis not in axes:
            return 0, 0
        i = axes.index(layout.axis)
        before, after = pads[i], pads[i + n]
        if before == after == 0:
            return 0, 0
        if before < 0 or after < 0:
            return "crops the channel axis (negative pads)"
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            return f"pads the channel axis in {mode} mode"
        return before, after

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.outputs[0])
        if keep is None or keep.all() or ctx.layouts.get(node.inputs[0].name) is None:
            return
        rank = rank_of(node.inputs[0])
        axes = _axes(node, rank, 3) or list(range(rank))
        axis = ctx.axis(node.inputs[0])
        if axis not in axes:
            return
        i, n = axes.index(axis), len(axes)
        pads = list(node.attrs["pads"]) if "pads" in node.attrs else _ints(node.inputs[1])
        before, after = pads[i], pads[i + n]
        pads[i], pads[i + n] = int(keep[:before].sum()), int(keep[len(keep) - after:].sum())
        if "pads" in node.attrs:
            node.attrs["pads"] = pads
        else:
            ctx.set_const(node, 1, np.asarray(pads, dtype=np.int64))


def _slice_params(node: gs.Node, rank: int) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(starts, ends, axes, steps) of a Slice (attributes before opset 10, inputs after); None if computed."""
    if "starts" in node.attrs:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = list(node.attrs.get("axes", range(len(starts))))
        return starts, ends, [a % rank for a in axes], [1] * len(starts)
    starts, ends = _ints(optional_input(node, 1)), _ints(optional_input(node, 2))
    if starts is None or ends is None:
        return None
    axes = _axes(node, rank, 3)
    steps = _ints(optional_input(node, 4)) if optional_input(node, 4) is not None else [1] * len(starts)
    if axes is None or steps is None:
        return None
    return starts, ends, axes or list(range(len(starts))), steps


def _clamp(i: int, n: int) -> int:
    return min(max(i + n if i < 0 else i, 0), n)


@register("Slice")
class SliceRule(OpRule):
    """Slices of other axes pass channels through; a slice of the channel axis with step 1 keeps a contiguous
    run of channels (``x.chunk(2, dim=1)`` as exporters write it) and its bounds are recounted on rewrite."""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        rank = rank_of(node.inputs[0])
        params = _slice_params(node, rank) if rank is not None else None
        if params is None:
            ctx.barrier(node, "slice parameters computed at run time")
            return
        starts, ends, axes, steps = params
        if layout.axis not in axes:
            passthrough(node, ctx)
            return
        i = axes.index(layout.axis)
        if steps[i] != 1:
            ctx.barrier(node, f"slices the channel axis with step {steps[i]}")
            return
        n = len(layout)
        start, end = _clamp(starts[i], n), _clamp(ends[i], n)
        if end <= start:
            ctx.barrier(node, "slices the channel axis to nothing")
            return
        ctx.set_layout(node.outputs[0], TensorLayout(layout.axis, layout.elems[start:end]))
        ctx.member(node, Role.SLICE)

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        keep = ctx.keep(node.inputs[0])
        if keep is None or keep.all():
            return
        axis = ctx.axis(node.inputs[0])
        starts, ends, axes, _ = _slice_params(node, rank_of(node.inputs[0]))
        if axis not in axes:
            return
        i, n = axes.index(axis), len(keep)
        start, end = _clamp(starts[i], n), _clamp(ends[i], n)
        starts[i] = int(keep[:start].sum())
        ends[i] = starts[i] + int(keep[start:end].sum())
        if "starts" in node.attrs:
            node.attrs["starts"], node.attrs["ends"] = starts, ends
        else:
            ctx.set_const(node, 1, np.asarray(starts, dtype=np.int64))
            ctx.set_const(node, 2, np.asarray(ends, dtype=np.int64))


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
            ctx.member(node, Role.CONCAT)
            return
        first = next(lay for lay in layouts if lay is not None)
        if any(lay is None or len(lay) != len(first) for lay in layouts):
            ctx.barrier(node, "concatenates along another axis with differing channels")
            return
        for lay in layouts:
            ctx.union(first.elems, lay.elems)
        ctx.set_layout(node.outputs[0], first)
        ctx.member(node, Role.JOIN)


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
        ctx.member(node, Role.SPLIT)

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
            ctx.member(node, Role.FLATTEN)
        else:
            ctx.barrier(node, "flattens channels with dynamic or leading dims")


def _shape_entries(tensor: gs.Tensor, depth: int = 0) -> list[object] | None:
    """The target-shape vector of a Reshape, entry by entry: ints where constant, ("dim", k, tensor) for dim k
    read from ``tensor``'s shape, None where unknown. None when even the length cannot be told."""
    value = constant_value(tensor)
    if value is not None:
        return [int(v) for v in np.asarray(value).reshape(-1)]
    node = producer(tensor)
    if node is None or depth > 8:
        return _unknown_entries(tensor)
    if node.op in ("Cast", "Identity", "Squeeze", "Unsqueeze"):
        return _shape_entries(node.inputs[0], depth + 1)
    if node.op == "Shape":
        positions = _shape_positions(node)
        return _unknown_entries(tensor) if positions is None else [("dim", i, node.inputs[0]) for i in positions]
    if node.op == "Slice" and producer(node.inputs[0]) is not None and producer(node.inputs[0]).op == "Shape":
        whole = _shape_entries(node.inputs[0], depth + 1)
        params = _slice_params(node, 1)
        if whole is None or params is None or params[3] != [1]:
            return _unknown_entries(tensor)
        return whole[_clamp(params[0][0], len(whole)):_clamp(params[1][0], len(whole))]
    if node.op == "Concat":
        parts = [_shape_entries(t, depth + 1) for t in node.inputs]
        return None if any(p is None for p in parts) else [x for p in parts for x in p]
    shape = producer(node.inputs[0]) if node.op == "Gather" else None
    if shape is not None and shape.op == "Shape" and not shape.attrs.get("start") and shape.attrs.get("end") is None:
        idx = _ints(node.inputs[1])
        return _unknown_entries(tensor) if idx is None else [("dim", i, shape.inputs[0]) for i in idx]
    return _unknown_entries(tensor)


def _shape_positions(node: gs.Node) -> list[int] | None:
    """The dims a Shape node returns (its ``start``/``end`` applied), or None if the rank is unknown."""
    rank = rank_of(node.inputs[0])
    if rank is None:
        return None
    return list(range(rank))[int(node.attrs.get("start", 0)):node.attrs.get("end")]


def same_channels(ctx: AnalysisContext, a: gs.Tensor, b: TensorLayout) -> bool:
    """Whether tensor ``a`` carries exactly the channels of layout ``b`` on the same axis (then its channel
    count, read at run time, is ``b``'s after pruning too)."""
    layout = ctx.layout(a)
    return layout is not None and layout.axis == b.axis and np.array_equal(layout.elems, b.elems)


def channel_entry_ok(ctx: AnalysisContext, entries: list[object], layout: TensorLayout) -> bool:
    """A computed target/sizes vector states the channel count correctly after pruning: at the channel axis a
    constant equal to the count (rewritten), ``-1``/``0`` where the op allows them (callers), or the channel
    dim read at run time from a tensor carrying the same channels; and nowhere else a tracked channel count."""
    for i, e in enumerate(entries):
        if isinstance(e, tuple) and i != layout.axis:
            src = ctx.layout(e[2])
            if src is not None and src.axis == e[1]:
                return False  # a channel count used as another dim: it would change with pruning
    e = entries[layout.axis] if layout.axis < len(entries) else None
    if isinstance(e, tuple):
        return e[1] == layout.axis and same_channels(ctx, e[2], layout)
    return e == len(layout)


def _unknown_entries(tensor: gs.Tensor) -> list[object] | None:
    dims = static_dims(tensor)
    if dims is None or len(dims) > 1 or (dims and dims[0] is None):
        return None
    return [None] * (dims[0] if dims else 1)


def _symbolic(tensor: gs.Tensor) -> list[object] | None:
    """Dims as shape inference named them: ints, dim_param strings, None where nothing is known."""
    if tensor.shape is None:
        return None
    return [d if (isinstance(d, int) and d >= 0) or (isinstance(d, str) and d) else None for d in tensor.shape]


def _same_dims(a: list[object], b: list[object]) -> bool:
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b))


def _same_prefix(sym_out: list[object], sym_in: list[object], entries: list[object] | None, n: int) -> bool:
    """The first ``n`` output dims of a Reshape are provably the input's: named alike by shape inference, or
    the target copies them (``0``) or reads them from a tensor whose dim is named alike."""
    if len(sym_out) < n or len(sym_in) < n:
        return False
    for i in range(n):
        if sym_out[i] is not None and sym_out[i] == sym_in[i]:
            continue
        entry = entries[i] if entries is not None and i < len(entries) else None
        if entry == 0 or (isinstance(entry, int) and entry == sym_in[i]):
            continue
        if isinstance(entry, tuple):
            src = _symbolic(entry[2])
            if src is not None and entry[1] < len(src) and src[entry[1]] is not None and src[entry[1]] == sym_in[i]:
                continue
        return False
    return True


def _only_reader(tensor: gs.Tensor, op: str) -> gs.Node | None:
    readers = tensor.outputs
    return readers[0] if len(readers) == 1 and readers[0].op == op else None


def shuffle_chain(node: gs.Node, axis: int) -> tuple[gs.Node, gs.Node] | None:
    """(Transpose, Reshape) when ``node`` is the first Reshape of a channel shuffle around ``axis``:
    Reshape (.., C, ..) -> (.., g, C/g, ..), Transpose swapping those two axes, Reshape back (each the only
    reader of the previous output)."""
    transpose = _only_reader(node.outputs[0], "Transpose")
    if transpose is None:
        return None
    perm = list(transpose.attrs.get("perm", []))
    expected = list(range(len(perm)))
    if axis + 1 >= len(perm):
        return None
    expected[axis], expected[axis + 1] = axis + 1, axis
    merge = _only_reader(transpose.outputs[0], "Reshape")
    return (transpose, merge) if perm == expected and merge is not None else None


def set_target_entry(node: gs.Node, input_index: int, index: int, size: int, ctx: RewriteContext) -> None:
    """Write ``size`` into entry ``index`` of the shape vector at ``node.inputs[input_index]`` (a Reshape target,
    Resize sizes) where it is stated as a positive number: a constant, or a constant piece of a Concat (cloned
    first when other nodes read the same vector). Entries read at run time follow the pruning by themselves."""
    target = node.inputs[input_index]
    value = constant_value(target)
    if value is not None:
        value = np.asarray(value).copy()
        if value[index] > 0:
            value[index] = size
            ctx.set_const(node, input_index, value)
        return
    concat = producer(target)
    if concat is None or concat.op != "Concat":
        return
    offset = 0
    for i, piece in enumerate(concat.inputs):
        part = constant_value(piece)
        length = int(np.asarray(part).size) if part is not None else len(_shape_entries(piece) or [None])
        if offset <= index < offset + length:
            if part is None or np.asarray(part).reshape(-1)[index - offset] <= 0:
                return
            if len(target.outputs) > 1:  # a target shared with other reshapes: give this one its own
                own = gs.Variable(ctx.names.fresh(f"{target.name}_pruned"), dtype=target.dtype)
                clone = gs.Node("Concat", ctx.names.fresh(f"{concat.name}_pruned"), dict(concat.attrs),
                                list(concat.inputs), [own])
                ctx.graph.nodes.insert(ctx.graph.nodes.index(concat) + 1, clone)
                node.inputs[input_index] = own
                concat = clone
            new = np.asarray(part).copy()
            new.reshape(-1)[index - offset] = size
            ctx.set_const(concat, i, new)
            return
        offset += length


@register("Reshape")
class ReshapeRule(OpRule):
    """Exact patterns, checked on the dims shape inference names (so a dynamic batch or width is matched by
    name, never assumed):

    - flatten (N, C, H, W) -> (N, C*H*W) before a Gemm/MatMul (each channel owns H*W consecutive positions);
    - the channel axis kept in place, other dims regrouped ((N, C, 1, W) -> (N, C, W), (N, C, H, W) ->
      (N, C, H*W)), and singleton moves around it ((N, C, 1, 1) <-> (N, C), as in SE blocks);
    - a channel shuffle (ShuffleNet): Reshape to (N, g, C/g, H, W), Transpose of those two axes, Reshape back,
      a fixed permutation of the channels. Once channels are removed it is rewritten as one ``Gather`` of the
      kept channels in their shuffled order (the Transpose and the second Reshape become ``Identity``), which
      is exact for any kept set (the grouped form needs every group to keep the same positions).

    A channel count stated in the target shape (a constant, or a constant piece of a ``Concat``) is rewritten.
    """

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        x, out = node.inputs[0], node.outputs[0]
        layout = ctx.layout(x)
        if layout is None:
            return
        sym_in, sym_out = _symbolic(x), _symbolic(out)
        if sym_in is None or sym_out is None:
            ctx.barrier(node, "rank unknown")
            return
        chain = shuffle_chain(node, layout.axis)
        if chain is not None:
            merged = self._shuffled(layout, sym_in, sym_out, chain)
            if isinstance(merged, str):
                ctx.barrier(node, merged)
            else:
                ctx.set_layout(chain[1].outputs[0], merged)
                for n in (node, *chain):
                    ctx.member(n, Role.SHUFFLE)
            return
        entries = _shape_entries(node.inputs[1])
        if entries is None or len(entries) != len(sym_out):
            ctx.barrier(node, "target shape computed at run time")
            return
        if layout.axis == 1 and self._leading_batch(x, entries) and _FlattenLike.analyze(node, ctx, layout):
            ctx.member(node, Role.FLATTEN)
            return
        axis, channels = layout.axis, len(layout)
        if len(sym_out) > axis and sym_out[axis] == channels and _same_prefix(sym_out, sym_in, entries, axis):
            if entries[axis] not in (-1, 0) and not channel_entry_ok(ctx, entries, layout):
                ctx.barrier(node, "target shape does not state the channel dim as a constant, -1 or 0")
                return
            ctx.set_layout(out, layout)
            ctx.member(node, Role.RESHAPE)
            return
        # singleton moves: every non-batch, non-channel dim is 1 on both sides
        dims, out_dims = static_dims(x), static_dims(out)
        if layout.axis == 1 and self._leading_batch(x, entries) and all(d == 1 for d in dims[2:]) \
                and len(out_dims) >= 2 and out_dims[1] in (channels, None) and all(d == 1 for d in out_dims[2:]) \
                and entries[1] in (channels, -1):
            ctx.set_layout(out, layout.moved(1))
            ctx.member(node, Role.RESHAPE)
            return
        ctx.barrier(node, "reshape mixes the channel axis with others")

    @staticmethod
    def _leading_batch(x: gs.Tensor, entries: list[object]) -> bool:
        dims = static_dims(x)
        return bool(dims) and _is_batch(dims[0]) and (entries[0] in (0, -1) or (entries[0] is not None and entries[0] == dims[0])
                                                       or _same_prefix([None], _symbolic(x), entries, 1))

    @staticmethod
    def _shuffled(layout: TensorLayout, sym_in: list[object], sym_out: list[object],
                  chain: tuple[gs.Node, gs.Node]) -> TensorLayout | str:
        axis, channels = layout.axis, len(layout)
        groups, per = (sym_out[axis], sym_out[axis + 1]) if len(sym_out) == len(sym_in) + 1 else (None, None)
        if not (isinstance(groups, int) and isinstance(per, int) and groups * per == channels):
            return "reshape splits the channel axis into dims that are not static"
        if not (_same_dims(sym_out[:axis], sym_in[:axis]) and _same_dims(sym_out[axis + 2:], sym_in[axis + 1:])):
            return "channel shuffle whose other dims cannot be matched"
        merged = _symbolic(chain[1].outputs[0])
        if merged is None or not _same_dims(merged, sym_in):
            return "channel shuffle that does not restore the input's dims"
        return TensorLayout(axis, layout.elems.reshape(groups, per).T.reshape(-1))

    def rewrite(self, node: gs.Node, ctx: RewriteContext) -> None:
        x, out = node.inputs[0], node.outputs[0]
        if ctx.layouts.get(x.name) is None:
            return
        chain = shuffle_chain(node, ctx.axis(x)) if ctx.layouts.get(out.name) is None else None
        if chain is not None:
            if ctx.changed(x):
                self._gather_shuffle(node, chain, ctx)
            return
        keep = ctx.keep(out)
        if keep is None or keep.all():
            return
        axis = ctx.axis(out)
        set_target_entry(node, 1, axis if len(keep) == len(ctx.keep(x)) else 1, int(keep.sum()), ctx)

    @staticmethod
    def _gather_shuffle(node: gs.Node, chain: tuple[gs.Node, gs.Node], ctx: RewriteContext) -> None:
        transpose, merge = chain
        keep_in, keep_out = ctx.keep(node.inputs[0]), ctx.keep(merge.outputs[0])
        groups = int(node.outputs[0].shape[ctx.axis(node.inputs[0])])
        source = np.arange(len(keep_in)).reshape(groups, -1).T.reshape(-1)  # output position -> input position
        new_index = np.cumsum(keep_in) - 1
        indices = new_index[source[keep_out]].astype(np.int64)
        node.op, node.attrs = "Gather", {"axis": ctx.axis(node.inputs[0])}
        node.inputs[1] = gs.Constant(ctx.names.fresh(f"{node.name}_shuffle_indices"), indices)
        for n in (transpose, merge):
            n.op, n.attrs = "Identity", {}
            while len(n.inputs) > 1:
                n.inputs.pop()


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
        if node.op == "Squeeze" and axes == []:  # no axes: every dim of size 1, told apart by the ranks
            ones = [i for i, d in enumerate(static_dims(x) or []) if d == 1]
            axes = ones if len(ones) == rank - out_rank else None
        if axes is None:
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
        ctx.member(node, Role.RESHAPE)


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
        ctx.member(node, Role.TRANSPOSE)


#: ops that move shape values around without computing with them
_SHAPE_PLUMBING = ("Cast", "Identity", "Squeeze", "Unsqueeze", "Concat", "Gather", "Slice")


def _channel_count_sinks(tensor: gs.Tensor, position: int, depth: int = 0) -> list[tuple[gs.Node, int, int]] | None:
    """Where the value at ``position`` of shape vector ``tensor`` ends up: (Reshape/Resize, input index, entry
    position) for each use as a shape entry; None if it is computed with or used otherwise."""
    if depth > 16:
        return None
    sinks: list[tuple[gs.Node, int, int]] = []
    for user in tensor.outputs:
        index = next(i for i, t in enumerate(user.inputs) if t is tensor)
        if (user.op, index) in (("Reshape", 1), ("Resize", 3)):
            sinks.append((user, index, position))
            continue
        if user.op not in _SHAPE_PLUMBING or index != 0 and user.op != "Concat":
            return None
        out = user.outputs[0]
        if user.op == "Gather":
            idx = _ints(user.inputs[1])
            if idx is None:
                return None
            picked = [j for j, i in enumerate(idx) if i == position]
            positions = picked if picked else []
        elif user.op == "Slice":
            params = _slice_params(user, 1)
            if params is None or params[3] != [1]:
                return None
            n = (static_dims(tensor) or [None])[0]
            start = params[0][0] if n is None else _clamp(params[0][0], n)
            end = params[1][0] if n is None else _clamp(params[1][0], n)
            positions = [position - start] if start <= position < end else []
        elif user.op == "Concat":
            lengths = [(static_dims(t) or [None])[0] if rank_of(t) == 1 else (1 if rank_of(t) == 0 else None)
                       for t in user.inputs[:index]]
            if any(n is None for n in lengths):
                return None
            positions = [position + sum(lengths)]
        else:
            positions = [position if rank_of(tensor) != 0 and rank_of(out) != 0 else 0]
        for p in positions:
            more = _channel_count_sinks(out, p, depth + 1)
            if more is None:
                return None
            sinks.extend(more)
    return sinks


@register("Shape")
class ShapeRule(OpRule):
    """Reading a tracked tensor's shape is fine while the channel dim is not used, or used only as the channel
    entry of a Reshape target / Resize sizes of a tensor carrying the same channels (it then follows the
    pruning: ``F.interpolate(x, size=skip.shape[-2:])`` writes ``Shape(x)[:2]`` into the sizes). Computing with
    it, or using it anywhere else, freezes the channels. (A channel count shape inference knows is a constant
    by then, see ``onnxprune.constant_fold``; this is about counts it could not tell.)"""

    def analyze(self, node: gs.Node, ctx: AnalysisContext) -> None:
        layout = ctx.layout(node.inputs[0])
        if layout is None:
            return
        positions = _shape_positions(node)
        if positions is None:
            ctx.barrier(node, "rank unknown")
            return
        if layout.axis not in positions:
            return
        sinks = _channel_count_sinks(node.outputs[0], positions.index(layout.axis))
        if sinks is None or any(p != layout.axis or not same_channels(ctx, user.inputs[0], layout)
                                for user, _, p in sinks):
            ctx.freeze(layout, f"Shape {node.name!r}: the channel count is read at run time")
