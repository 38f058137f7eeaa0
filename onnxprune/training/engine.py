"""The differentiable engine: an ONNX graph executed node by node with PyTorch, its float weights as
``torch.nn.Parameter``, so that a model can be trained *as the ONNX graph it is* and its new weight values written
back into the same graph (:func:`write_back`): no re-export, no exporter drift.

Rules and limits:

- Trainable: float initializers and Constant-node values with more than one element, except the inputs that are
  statistics or geometry (BatchNormalization mean/var, Resize scales, Clip bounds, Pad values, shape
  operands). Scalars (epsilons, attention scales, HardSigmoid constants) stay fixed. Weights reached through
  Identity / Reshape / Transpose / Cast nodes train as the initializer they come from.
- BatchNormalization runs in inference form (running statistics fixed); Dropout is the identity.
- Ops outside :data:`OPS`, subgraphs (If, Loop, Scan), training-mode BatchNorm and second outputs that are
  consumed (MaxPool indices, Dropout mask) make :func:`check_supported` refuse with the list. LSTM and GRU run
  step by step in Python (default activations, no clip, full-length sequences; else refused).
- The engine is only trusted after :func:`verify_engine` has compared it with ONNX Runtime (graph
  optimizations off) on real inputs, with the same tolerance rule as ``--verify``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnxprune.errors import UnsupportedModelError, VerificationError
from onnxprune.normalize import default_opset

if TYPE_CHECKING:
    from onnxprune.verify import Reference

Tensor = torch.Tensor

#: (op, input index) pairs whose float operand is never trained: statistics, bounds and geometry
FIXED_OPERANDS = {("BatchNormalization", 3), ("BatchNormalization", 4), ("Resize", 1), ("Resize", 2),
                  ("Resize", 3), ("Upsample", 1), ("Clip", 1), ("Clip", 2), ("Pad", 1), ("Pad", 2), ("Pad", 3),
                  ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3),
                  ("Slice", 4), ("Range", 0), ("Range", 1), ("Range", 2), ("ConstantOfShape", 0),
                  ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceMean", 1), ("ReduceSum", 1), ("ReduceMax", 1),
                  ("ReduceMin", 1), ("Split", 1), ("TopK", 1), ("Pow", 1)}
#: ops through which a weight keeps its identity (its initializer is the parameter)
_PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze", "Flatten"}

_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
           onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
           onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
           onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8,
           onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.INT16: torch.int16}


class Attrs:
    """A node's attributes by name, decoded."""

    def __init__(self, node: onnx.NodeProto) -> None:
        self._a = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def get(self, name: str, default: object = None) -> object:
        value = self._a.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def ints(self, name: str, default: Sequence[int] | None = None) -> list[int] | None:
        value = self._a.get(name)
        return [int(v) for v in value] if value is not None else (list(default) if default is not None else None)


@dataclass(frozen=True)
class Ctx:
    """What an op implementation sees: its node, attributes, opset and (for shapes) the input values."""

    node: onnx.NodeProto
    attrs: Attrs
    opset: int


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _opt(inputs: list[Tensor | None], i: int) -> Tensor | None:
    return inputs[i] if i < len(inputs) else None


# --- convolution and pooling -------------------------------------------------------------------------------

def _spatial_pads(ctx: Ctx, x: Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads [b1..bn, e1..en] for the node, auto_pad resolved against the input size."""
    n = len(kernel)
    auto = ctx.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(n):
            size = x.shape[2 + i]
            out = math.ceil(size / strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else large)
            ends.append(large if auto == "SAME_UPPER" else small)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * n)
    return ctx.attrs.ints("pads", [0] * (2 * n))


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1..bn, e1..en] over the spatial axes -> F.pad's (b_n, e_n, ..., b_1, e_1)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[n + i]]
    return out


def _conv(ctx: Ctx, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    n = w.dim() - 2
    kernel = ctx.attrs.ints("kernel_shape", list(w.shape[2:]))
    strides = ctx.attrs.ints("strides", [1] * n)
    dilations = ctx.attrs.ints("dilations", [1] * n)
    pads = _spatial_pads(ctx, x, kernel, strides, dilations)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    if pads[:n] == pads[n:]:
        return fn(x, w, b, strides, pads[:n], dilations, int(ctx.attrs.get("group", 1)))
    return fn(F.pad(x, _torch_pad(pads)), w, b, strides, 0, dilations, int(ctx.attrs.get("group", 1)))


def _conv_transpose(ctx: Ctx, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    n = w.dim() - 2
    kernel = ctx.attrs.ints("kernel_shape", list(w.shape[2:]))
    strides = ctx.attrs.ints("strides", [1] * n)
    dilations = ctx.attrs.ints("dilations", [1] * n)
    group = int(ctx.attrs.get("group", 1))
    out_pad = ctx.attrs.ints("output_padding", [0] * n)
    full = [strides[i] * (x.shape[2 + i] - 1) + (kernel[i] - 1) * dilations[i] + 1 + out_pad[i] for i in range(n)]
    output_shape = ctx.attrs.ints("output_shape")
    auto = ctx.attrs.get("auto_pad", "NOTSET")
    if output_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = output_shape[-n:] if output_shape else [x.shape[2 + i] * strides[i] for i in range(n)]
        total = [full[i] - target[i] for i in range(n)]
        lower = auto == "SAME_LOWER"
        pads = ([t - t // 2 if lower else t // 2 for t in total] + [t // 2 if lower else t - t // 2 for t in total])
    elif auto == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = ctx.attrs.ints("pads", [0] * (2 * n))
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    y = fn(x, w, None, strides, 0, 0, group, dilations)
    if any(out_pad):
        y = F.pad(y, _torch_pad([0] * n + out_pad))
    index = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[n + i]) for i in range(n)]
    y = y[tuple(index)]
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * n))
    return y


def _pool_geometry(ctx: Ctx, x: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = ctx.attrs.ints("kernel_shape")
    n = len(kernel)
    strides = ctx.attrs.ints("strides", [1] * n)
    dilations = ctx.attrs.ints("dilations", [1] * n)
    return kernel, strides, dilations, _spatial_pads(ctx, x, kernel, strides, dilations)


def _max_pool(ctx: Ctx, x: Tensor) -> Tensor:
    kernel, strides, dilations, pads = _pool_geometry(ctx, x)
    n = len(kernel)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    ceil = bool(ctx.attrs.get("ceil_mode", 0))
    if pads[:n] == pads[n:] and all(2 * p <= k for p, k in zip(pads[:n], kernel)):
        return fn(x, kernel, strides, pads[:n], dilations, ceil_mode=ceil)
    return fn(F.pad(x, _torch_pad(pads), value=-math.inf), kernel, strides, 0, dilations, ceil_mode=ceil)


def _avg_pool(ctx: Ctx, x: Tensor) -> Tensor:
    kernel, strides, _, pads = _pool_geometry(ctx, x)
    n = len(kernel)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    ceil = bool(ctx.attrs.get("ceil_mode", 0))
    include = bool(ctx.attrs.get("count_include_pad", 0))
    if not any(pads):
        return fn(x, kernel, strides, 0, ceil_mode=ceil, count_include_pad=False)
    padded = F.pad(x, _torch_pad(pads))
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    mask = F.pad(ones, _torch_pad(pads), value=1.0 if include else 0.0)
    if n == 1:
        total = F.avg_pool1d(padded, kernel, strides, 0, ceil_mode=ceil) * kernel[0]
        count = F.avg_pool1d(mask, kernel, strides, 0, ceil_mode=ceil) * kernel[0]
    else:
        total = fn(padded, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
        count = fn(mask, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    return total / count


# --- shape ops ---------------------------------------------------------------------------------------------

def _reshape(ctx: Ctx, x: Tensor, shape: Tensor) -> Tensor:
    dims = _ints(shape)
    if not ctx.attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(ctx: Ctx, x: Tensor) -> Tensor:
    axis = int(ctx.attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _transpose(ctx: Ctx, x: Tensor) -> Tensor:
    return x.permute(ctx.attrs.ints("perm", list(reversed(range(x.dim())))))


def _axes(ctx: Ctx, inputs: list[Tensor | None], index: int) -> list[int] | None:
    if ctx.attrs.get("axes") is not None:
        return ctx.attrs.ints("axes")
    t = _opt(inputs, index)
    return _ints(t) if t is not None else None


def _squeeze(ctx: Ctx, *inputs: Tensor) -> Tensor:
    x = inputs[0]
    axes = _axes(ctx, list(inputs), 1)
    if axes is None:
        return x.squeeze()
    axes = sorted(a + x.dim() if a < 0 else a for a in axes)
    for a in reversed(axes):
        x = x.squeeze(a)
    return x


def _unsqueeze(ctx: Ctx, *inputs: Tensor) -> Tensor:
    x = inputs[0]
    axes = _axes(ctx, list(inputs), 1) or []
    rank = x.dim() + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(a)
    return x


def _concat(ctx: Ctx, *xs: Tensor) -> Tensor:
    xs = tuple(x for x in xs if x.numel() or x.dim() > 1)
    return torch.cat(xs, dim=int(ctx.attrs.get("axis")))


def _split(ctx: Ctx, *inputs: Tensor) -> tuple[Tensor, ...]:
    x = inputs[0]
    axis = int(ctx.attrs.get("axis", 0))
    sizes = ctx.attrs.ints("split") or (_ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None)
    n = len(ctx.node.output)
    if not sizes:
        size = x.shape[axis]
        chunk = math.ceil(size / n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    return tuple(torch.split(x, sizes, dim=axis))


def _slice(ctx: Ctx, *inputs: Tensor | None) -> Tensor:
    x = inputs[0]
    if ctx.opset < 10:
        starts, ends = ctx.attrs.ints("starts"), ctx.attrs.ints("ends")
        axes = ctx.attrs.ints("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + x.dim() if axis < 0 else axis
        index = range(x.shape[axis])[slice(start, end, step)]   # python's clamping equals ONNX's
        if step == 1:
            x = x.narrow(axis, index.start, len(index)) if len(index) else x.narrow(axis, 0, 0)
        else:
            x = x.index_select(axis, torch.tensor(list(index), dtype=torch.long))
    return x


def _gather(ctx: Ctx, x: Tensor, indices: Tensor) -> Tensor:
    axis = int(ctx.attrs.get("axis", 0))
    axis = axis + x.dim() if axis < 0 else axis
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _shape(ctx: Ctx, x: Tensor) -> Tensor:
    dims = list(x.shape)
    start = int(ctx.attrs.get("start", 0))
    end = ctx.attrs.get("end")
    return torch.tensor(dims[start:None if end is None else int(end)], dtype=torch.int64)


def _expand(ctx: Ctx, x: Tensor, shape: Tensor) -> Tensor:
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))


def _tile(ctx: Ctx, x: Tensor, repeats: Tensor) -> Tensor:
    return x.repeat(_ints(repeats))


def _pad(ctx: Ctx, *inputs: Tensor | None) -> Tensor:
    x = inputs[0]
    if ctx.opset < 11:
        pads, value = ctx.attrs.ints("pads"), float(ctx.attrs.get("value", 0.0))
        axes = list(range(x.dim()))
    else:
        pads = _ints(inputs[1])
        value = float(inputs[2].reshape(-1)[0]) if len(inputs) > 2 and inputs[2] is not None and \
            inputs[2].numel() else 0.0
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    full = [0] * (2 * x.dim())
    for i, a in enumerate(axes):
        full[a], full[x.dim() + a] = pads[i], pads[len(axes) + i]
    torch_pads: list[int] = []
    for a in reversed(range(x.dim())):
        torch_pads += [full[a], full[x.dim() + a]]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    mode = ctx.attrs.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


def _resize(ctx: Ctx, *inputs: Tensor | None) -> Tensor:
    x = inputs[0]
    mode = ctx.attrs.get("mode", "nearest")
    if ctx.node.op_type == "Upsample":
        scales = _floats(inputs[1]) if len(inputs) > 1 else [float(s) for s in ctx.attrs.get("scales")]
        sizes = None
        transform, nearest = "asymmetric", "floor"
    else:
        scales = _floats(_opt(list(inputs), 2)) if ctx.opset >= 11 else _floats(inputs[1])
        sizes = _ints(_opt(list(inputs), 3)) if ctx.opset >= 11 else []
        transform = ctx.attrs.get("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 11 else "asymmetric")
        nearest = ctx.attrs.get("nearest_mode", "round_prefer_floor")
    spatial = x.dim() - 2
    if sizes:
        out = sizes[-spatial:]
        size_kw: dict[str, object] = {"size": out}
    else:
        if scales[:2] not in ([1.0, 1.0], []):
            raise UnsupportedModelError("Resize over the batch or channel axis")
        size_kw = {"scale_factor": scales[2:], "recompute_scale_factor": False}
    if mode == "nearest":
        if transform == "asymmetric" and nearest == "floor":
            return F.interpolate(x, mode="nearest", **size_kw)
        if transform in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn") and \
                nearest in ("round_prefer_ceil", "round_prefer_floor", "floor"):
            return F.interpolate(x, mode="nearest-exact", **size_kw)
        if transform == "asymmetric" and nearest in ("round_prefer_floor", "round_prefer_ceil"):
            return F.interpolate(x, mode="nearest", **size_kw)
    if mode == "linear" and spatial in (1, 2, 3):
        torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
        if transform in ("half_pixel", "pytorch_half_pixel"):
            return F.interpolate(x, mode=torch_mode, align_corners=False, **size_kw)
        if transform == "align_corners":
            return F.interpolate(x, mode=torch_mode, align_corners=True, **size_kw)
    raise _Unsupported(f"Resize mode={mode} coordinate_transformation_mode={transform}")


def _floats(t: Tensor | None) -> list[float]:
    return [] if t is None else [float(v) for v in t.reshape(-1).tolist()]


# --- normalization, activations, reductions ----------------------------------------------------------------

def _batch_norm(ctx: Ctx, x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    if ctx.attrs.get("training_mode", 0):
        raise _Unsupported("BatchNormalization with training_mode=1")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    eps = float(ctx.attrs.get("epsilon", 1e-5))
    inv = scale / torch.sqrt(var + eps)
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def _layer_norm(ctx: Ctx, x: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    axis = int(ctx.attrs.get("axis", -1))
    axis = axis + x.dim() if axis < 0 else axis
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(ctx.attrs.get("epsilon", 1e-5))) * scale
    return y + bias if bias is not None else y


def _instance_norm(ctx: Ctx, x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=float(ctx.attrs.get("epsilon", 1e-5)))


def _softmax_like(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def run(ctx: Ctx, x: Tensor) -> Tensor:
        default = -1 if ctx.opset >= 13 else 1
        axis = int(ctx.attrs.get("axis", default))
        axis = axis + x.dim() if axis < 0 else axis
        if ctx.opset >= 13:
            return fn(x, dim=axis)
        flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)   # opset < 13: 2-D coercion
        return fn(flat, dim=1).reshape(x.shape)
    return run


def _clip(ctx: Ctx, *inputs: Tensor | None) -> Tensor:
    x = inputs[0]
    if ctx.opset < 11:
        low, high = ctx.attrs.get("min"), ctx.attrs.get("max")
    else:
        low = inputs[1] if len(inputs) > 1 and inputs[1] is not None and inputs[1].numel() else None
        high = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
        low = None if low is None else float(low.reshape(-1)[0])
        high = None if high is None else float(high.reshape(-1)[0])
    return torch.clamp(x, min=low, max=high)


def _reduce(fn: str) -> Callable[..., Tensor]:
    def run(ctx: Ctx, *inputs: Tensor | None) -> Tensor:
        x = inputs[0]
        keep = bool(ctx.attrs.get("keepdims", 1))
        axes = _axes(ctx, list(inputs), 1)
        if not axes:
            if ctx.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(a + x.dim() if a < 0 else a for a in axes)
        if fn == "mean":
            return x.mean(dim=dims, keepdim=keep)
        if fn == "sum":
            return x.sum(dim=dims, keepdim=keep)
        if fn == "l2":
            return torch.sqrt((x * x).sum(dim=dims, keepdim=keep))
        out = x
        for d in sorted(dims, reverse=True):
            out = (out.amax if fn == "max" else out.amin)(dim=d, keepdim=keep)
        return out
    return run


def _gemm(ctx: Ctx, a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
    if ctx.attrs.get("transA", 0):
        a = a.t()
    if ctx.attrs.get("transB", 0):
        b = b.t()
    y = float(ctx.attrs.get("alpha", 1.0)) * (a @ b)
    return y + float(ctx.attrs.get("beta", 1.0)) * c if c is not None else y


def _div(ctx: Ctx, a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _cast(ctx: Ctx, x: Tensor) -> Tensor:
    to = int(ctx.attrs.get("to"))
    if to not in _DTYPES:
        raise _Unsupported(f"Cast to {onnx.TensorProto.DataType.Name(to)}")
    return x.to(_DTYPES[to])


def _constant(ctx: Ctx) -> Tensor:
    value = _constant_value(ctx.node)
    return torch.from_numpy(value.copy())


def _constant_of_shape(ctx: Ctx, shape: Tensor) -> Tensor:
    value = ctx.attrs.get("value")
    array = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return torch.full(_ints(shape), array.reshape(-1)[0].item(), dtype=torch.from_numpy(array.copy()).dtype)


def _range(ctx: Ctx, start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _where(ctx: Ctx, c: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(c.bool(), a, b)


def _gelu(ctx: Ctx, x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh" if ctx.attrs.get("approximate", "none") == "tanh" else "none")


def _prelu(ctx: Ctx, x: Tensor, slope: Tensor) -> Tensor:
    return torch.where(x >= 0, x, x * slope)


def _hard_sigmoid(ctx: Ctx, x: Tensor) -> Tensor:
    return torch.clamp(float(ctx.attrs.get("alpha", 0.2)) * x + float(ctx.attrs.get("beta", 0.5)), 0.0, 1.0)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor], mean: bool = False) -> Callable[..., Tensor]:
    def run(ctx: Ctx, *xs: Tensor) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out / len(xs) if mean else out
    return run


def _topk(ctx: Ctx, x: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    values, indices = torch.topk(x, int(k.reshape(-1)[0]), dim=int(ctx.attrs.get("axis", -1)),
                                 largest=bool(ctx.attrs.get("largest", 1)), sorted=True)
    return values, indices.long()


def _argmax(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def run(ctx: Ctx, x: Tensor) -> Tensor:
        return fn(x, dim=int(ctx.attrs.get("axis", 0)), keepdim=bool(ctx.attrs.get("keepdims", 1)))
    return run


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    return lambda ctx, x: fn(x)


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    return lambda ctx, a, b: fn(a, b)


def _recurrent_setup(ctx: Ctx, x: Tensor, inputs: list[Tensor | None]) -> tuple[Tensor, int, list[bool]]:
    """Common checks of LSTM/GRU: time-major input, directions, no clip or custom activations, full lengths."""
    if ctx.attrs.get("clip") is not None or ctx.attrs.get("activations") is not None:
        raise _Unsupported(f"{ctx.node.op_type} with clip or custom activations")
    layout = int(ctx.attrs.get("layout", 0))
    xs = x.transpose(0, 1) if layout else x                          # (seq, batch, input)
    lengths = _opt(inputs, 4)
    if lengths is not None and bool((lengths != xs.shape[0]).any()):
        raise _Unsupported(f"{ctx.node.op_type} with sequence_lens shorter than the sequence")
    direction = ctx.attrs.get("direction", "forward")
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    return xs, layout, reverse


def _recurrent_outputs(ys: list[Tensor], finals: list[list[Tensor]], layout: int) -> tuple[Tensor, ...]:
    y = torch.stack(ys, dim=1)                                        # (seq, dirs, batch, hidden)
    states = [torch.stack(f, dim=0) for f in finals]                 # (dirs, batch, hidden)
    if layout:
        return (y.permute(2, 0, 1, 3), *(h.transpose(0, 1) for h in states))
    return (y, *states)


def _lstm(ctx: Ctx, *inputs: Tensor | None) -> tuple[Tensor, ...]:
    x, w, r = inputs[0], inputs[1], inputs[2]
    if ctx.attrs.get("input_forget", 0):
        raise _Unsupported("LSTM with input_forget=1")
    xs, layout, reverse = _recurrent_setup(ctx, x, list(inputs))
    hidden = w.shape[1] // 4
    b, h0, c0, peep = (_opt(list(inputs), i) for i in (3, 5, 6, 7))
    ys, hs, cs = [], [], []
    for d, backwards in enumerate(reverse):
        bias = b[d, :4 * hidden] + b[d, 4 * hidden:] if b is not None else 0
        h = h0[d] if h0 is not None else xs.new_zeros(xs.shape[1], hidden)
        c = c0[d] if c0 is not None else xs.new_zeros(xs.shape[1], hidden)
        p_i, p_o, p_f = (peep[d].split(hidden) if peep is not None else (0, 0, 0))
        projected = xs @ w[d].t() + bias                               # every step's input part at once
        out = [None] * xs.shape[0]
        for t in (range(xs.shape[0] - 1, -1, -1) if backwards else range(xs.shape[0])):
            g = projected[t] + h @ r[d].t()
            gi, go, gf, gc = g.split(hidden, dim=-1)
            i_t = torch.sigmoid(gi + p_i * c)
            f_t = torch.sigmoid(gf + p_f * c)
            c = f_t * c + i_t * torch.tanh(gc)
            h = torch.sigmoid(go + p_o * c) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
        cs.append(c)
    return _recurrent_outputs(ys, [hs, cs], layout)


def _gru(ctx: Ctx, *inputs: Tensor | None) -> tuple[Tensor, ...]:
    x, w, r = inputs[0], inputs[1], inputs[2]
    xs, layout, reverse = _recurrent_setup(ctx, x, list(inputs))
    hidden = w.shape[1] // 3
    b, h0 = _opt(list(inputs), 3), _opt(list(inputs), 5)
    before_reset = bool(ctx.attrs.get("linear_before_reset", 0))
    ys, hs = [], []
    for d, backwards in enumerate(reverse):
        wb = b[d, :3 * hidden] if b is not None else xs.new_zeros(3 * hidden)
        rb = b[d, 3 * hidden:] if b is not None else xs.new_zeros(3 * hidden)
        h = h0[d] if h0 is not None else xs.new_zeros(xs.shape[1], hidden)
        projected = xs @ w[d].t() + wb
        r_z, r_r, r_h = r[d].split(hidden)
        rb_z, rb_r, rb_h = rb.split(hidden)
        out = [None] * xs.shape[0]
        for t in (range(xs.shape[0] - 1, -1, -1) if backwards else range(xs.shape[0])):
            x_z, x_r, x_h = projected[t].split(hidden, dim=-1)
            z = torch.sigmoid(x_z + h @ r_z.t() + rb_z)
            reset = torch.sigmoid(x_r + h @ r_r.t() + rb_r)
            candidate = torch.tanh(x_h + reset * (h @ r_h.t() + rb_h)) if before_reset else \
                torch.tanh(x_h + (reset * h) @ r_h.t() + rb_h)
            h = (1 - z) * candidate + z * h
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
    return _recurrent_outputs(ys, [hs], layout)


class _Unsupported(Exception):
    """An op instance the engine does not implement (collected into one UnsupportedModelError)."""


OPS: dict[str, Callable[..., Tensor | tuple[Tensor, ...]]] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _div,
    "Pow": _binary(torch.pow), "Sum": _variadic(torch.add), "Mean": _variadic(torch.add, mean=True),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge), "Not": _unary(torch.logical_not),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or), "Where": _where,
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil), "Sin": _unary(torch.sin), "Cos": _unary(torch.cos),
    "Softplus": _unary(F.softplus), "Softsign": _unary(F.softsign), "Mish": _unary(F.mish),
    "HardSwish": _unary(F.hardswish), "HardSigmoid": _hard_sigmoid, "PRelu": _prelu, "Gelu": _gelu,
    "LeakyRelu": lambda ctx, x: F.leaky_relu(x, float(ctx.attrs.get("alpha", 0.01))),
    "Elu": lambda ctx, x: F.elu(x, float(ctx.attrs.get("alpha", 1.0))),
    "Celu": lambda ctx, x: F.celu(x, float(ctx.attrs.get("alpha", 1.0))),
    "Selu": lambda ctx, x: float(ctx.attrs.get("gamma", 1.0507009873554805)) * torch.where(
        x > 0, x, float(ctx.attrs.get("alpha", 1.6732632423543772)) * (torch.exp(x) - 1)),
    "ThresholdedRelu": lambda ctx, x: torch.where(x > float(ctx.attrs.get("alpha", 1.0)), x, torch.zeros_like(x)),
    "Clip": _clip, "Softmax": _softmax_like(torch.softmax), "LogSoftmax": _softmax_like(torch.log_softmax),
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm, "InstanceNormalization": _instance_norm,
    "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "GlobalAveragePool": lambda ctx, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda ctx, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat, "Split": _split,
    "Slice": _slice, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Shape": _shape, "Gather": _gather,
    "Expand": _expand, "Tile": _tile, "Pad": _pad, "Resize": _resize, "Upsample": _resize,
    "Identity": _unary(lambda x: x), "Dropout": lambda ctx, *xs: xs[0], "Cast": _cast, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, "Range": _range, "TopK": _topk,
    "ArgMax": _argmax(torch.argmax), "ArgMin": _argmax(torch.argmin),
    "ReduceMean": _reduce("mean"), "ReduceSum": _reduce("sum"), "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"), "ReduceL2": _reduce("l2"),
    "Einsum": lambda ctx, *xs: torch.einsum(str(ctx.attrs.get("equation")), *xs),
    "CumSum": lambda ctx, x, axis: torch.cumsum(x, dim=int(axis.reshape(-1)[0])),
    "LSTM": _lstm, "GRU": _gru,
}
#: second outputs the engine can produce (others must be unused)
_MULTI_OUTPUT = {"Split", "TopK", "LSTM", "GRU"}


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.array(a.i, np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), np.int64)
    raise _Unsupported(f"Constant {node.name!r} with attribute {[a.name for a in node.attribute]}")


def check_supported(model: onnx.ModelProto) -> list[str]:
    """The reasons the engine cannot run ``model`` (empty when it can): one line per op type or node."""
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    problems: dict[str, str] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.setdefault(f"{node.domain}.{node.op_type}", f"{node.domain}.{node.op_type} (custom domain)")
        elif node.op_type not in OPS:
            problems.setdefault(node.op_type, f"{node.op_type} (no implementation)")
        elif node.op_type not in _MULTI_OUTPUT and any(o and o in consumed for o in node.output[1:]):
            problems.setdefault(f"{node.op_type}:2", f"{node.op_type} {node.name!r}: second output is used")
        elif node.op_type == "BatchNormalization" and Attrs(node).get("training_mode", 0):
            problems.setdefault("bn-training", "BatchNormalization with training_mode=1")
    return sorted(problems.values())


def trainable_names(model: onnx.ModelProto) -> list[str]:
    """Names of the float initializers and Constant outputs the engine trains (see the module rules)."""
    graph = model.graph
    candidates: dict[str, int] = {}
    for t in graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) and int(np.prod(t.dims)) > 1:
            candidates[t.name] = 0
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            try:
                value = _constant_value(node)
            except _Unsupported:
                continue
            if value.dtype in (np.float32, np.float64) and value.size > 1:
                candidates[node.output[0]] = 0
    graph_inputs = {i.name for i in graph.input}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))

    def used_fixed(name: str, seen: set[str]) -> bool:
        for node, i in consumers.get(name, []):
            if (node.op_type, i) in FIXED_OPERANDS:
                return True
            if node.op_type in _PASS_THROUGH and i == 0 and node.output[0] not in seen:
                seen.add(node.output[0])
                if used_fixed(node.output[0], seen):
                    return True
        return False

    return [n for n in candidates if n not in graph_inputs and not used_fixed(n, {n})]


class OnnxModule(torch.nn.Module):
    """``model`` as a torch module. ``forward(feeds, want=None)`` returns a dict of the graph outputs (and of the
    tensors named in ``want``). Parameters are in :attr:`params`, keyed by ONNX tensor name."""

    def __init__(self, model: onnx.ModelProto, trainable: Iterable[str] | None = None) -> None:
        super().__init__()
        problems = check_supported(model)
        if problems:
            raise UnsupportedModelError("the training engine cannot run this model: " + "; ".join(problems))
        self.graph_nodes = list(model.graph.node)
        self.opset = default_opset(model)
        self._contexts = [Ctx(node, Attrs(node), self.opset) for node in self.graph_nodes]
        self.output_names = [o.name for o in model.graph.output]
        self.input_names = [i.name for i in model.graph.input
                            if i.name not in {t.name for t in model.graph.initializer}]
        train = set(trainable_names(model) if trainable is None else trainable)
        self._keys: dict[str, str] = {}
        self._tied: dict[str, tuple[str, Tensor, Tensor, Tensor]] = {}   # name -> (key, index, base, scale)
        self.params = torch.nn.ParameterDict()
        self.constants: dict[str, Tensor] = {}
        for t in model.graph.initializer:
            value = torch.from_numpy(numpy_helper.to_array(t).copy())
            self._store(t.name, value, t.name in train)
        self._constant_nodes: set[int] = set()
        for index, node in enumerate(self.graph_nodes):
            if node.op_type == "Constant" and node.output[0] in train:
                self._store(node.output[0], torch.from_numpy(_constant_value(node).copy()), True)
                self._constant_nodes.add(index)

    def _store(self, name: str, value: Tensor, trainable: bool) -> None:
        if trainable:
            key = f"p{len(self._keys)}"
            self._keys[name] = key
            self.params[key] = torch.nn.Parameter(value.float() if value.dtype == torch.float64 else value)
        else:
            self.constants[name] = value

    def named_onnx_parameters(self) -> dict[str, torch.nn.Parameter]:
        """ONNX tensor name -> parameter (tied weights excluded: see :meth:`tie`)."""
        return {name: self.params[key] for name, key in self._keys.items()}

    def tie(self, name: str, codebook: np.ndarray, index: np.ndarray) -> torch.nn.Parameter:
        """Make weight ``name`` shared (Deep Compression): ``codebook[index]`` with ``index`` fixed and
        ``codebook[0] == 0`` fixed (pruned connections); the other entries train, and each one's gradient is the
        sum of the gradients of the weights sharing it. Returns the parameter, which is *relative*: entry k is
        ``c_k * (1 + u_k)`` (scale floored at 1% of the codebook's RMS), so an optimizer step moves every centroid
        by a fraction of itself. In absolute units Adam moved the near-zero centroids, shared by most weights, as
        far as the largest ones and ruined a 4-bit VGG-16-BN in a few steps (90% -> 21%)."""
        key = self._keys.pop(name, None)
        if key is not None:
            del self.params[key]
        self.constants.pop(name, None)
        tied_key = f"t{len(self._tied)}"
        base = torch.from_numpy(codebook[1:].astype(np.float32).copy())
        scale = base.abs() + 0.01 * float(base.pow(2).mean().sqrt())
        self.params[tied_key] = torch.nn.Parameter(torch.zeros_like(base))
        self._tied[name] = (tied_key, torch.from_numpy(index.astype(np.int64)), base, scale)
        return self.params[tied_key]

    def tied_parameters(self) -> list[torch.nn.Parameter]:
        """The relative codebook parameters (see :meth:`tie`): already in units of their own scale."""
        return [self.params[key] for key, *_ in self._tied.values()]

    def _codebook(self, name: str) -> Tensor:
        key, _, base, scale = self._tied[name]
        return base + scale * self.params[key]

    def tied_codebooks(self) -> dict[str, np.ndarray]:
        """Each tied weight's codebook, 0 first."""
        return {name: np.concatenate([[0.0], self._codebook(name).detach().numpy()]).astype(np.float32)
                for name in self._tied}

    def onnx_values(self) -> dict[str, Tensor]:
        """Every trained tensor's current value by ONNX name (tied weights expanded)."""
        values = {name: self.params[key] for name, key in self._keys.items()}
        for name, (_, index, _, _) in self._tied.items():
            values[name] = torch.cat([torch.zeros(1), self._codebook(name)])[index]
        return values

    def forward(self, feeds: dict[str, Tensor], want: Sequence[str] = ()) -> dict[str, Tensor]:
        env: dict[str, Tensor] = dict(self.constants)
        env.update(self.onnx_values())
        env.update(feeds)
        for index, node in enumerate(self.graph_nodes):
            if index in self._constant_nodes:
                continue
            args = [env[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            try:
                result = OPS[node.op_type](self._contexts[index], *args)
            except _Unsupported as e:
                raise UnsupportedModelError(f"the training engine cannot run node {node.name!r}: {e}") from None
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.output, results):
                if name:
                    env[name] = value
        names = list(self.output_names) + [n for n in want if n not in self.output_names]
        return {n: env[n] for n in names}


def write_back(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """A copy of ``model`` with the module's parameter values in place of the original ones: same nodes, names,
    opset, inputs and outputs; each tensor keeps its dtype."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {name: p.detach().cpu().numpy() for name, p in module.onnx_values().items()}
    for t in out.graph.initializer:
        if t.name in values:
            array = values[t.name].astype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
            t.CopyFrom(numpy_helper.from_array(array, t.name))
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] in values:
            for a in node.attribute:
                if a.name == "value":
                    array = values[node.output[0]].astype(onnx.helper.tensor_dtype_to_np_dtype(a.t.data_type))
                    a.t.CopyFrom(numpy_helper.from_array(array, a.t.name))
                elif a.name == "value_floats":
                    del a.floats[:]
                    a.floats.extend(float(v) for v in values[node.output[0]].reshape(-1))
    return out


def to_torch(feeds: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}


def verify_engine(model: onnx.ModelProto, module: OnnxModule, feeds: dict[str, np.ndarray],
                  rel_tol: float | None = None) -> float:
    """Compare the engine with ONNX Runtime (graph optimizations off) on ``feeds``; raises
    :class:`VerificationError` naming the worst output when they disagree beyond the ``--verify`` tolerance.

    Beyond it, float32 rounding alone may be the cause (a deep net whose refit weights are large): then the
    engine is run once more in float64, and the two agree when ONNX Runtime is as close to that float64 result
    as :data:`ROUNDING_FACTOR` times the engine's own float32 rounding (a wrong op is off by far more).
    Returns the relative difference."""
    from onnxprune.pass_infra import default_tolerance
    from onnxprune.verify import Reference

    reference = Reference.on(model, feeds)
    module.eval()
    want = [p.tensor for p, _ in reference.probes.values()]
    with torch.no_grad():
        got = {k: v.detach().numpy() for k, v in module(to_torch(feeds), want).items()}
    comparison = reference.compare_results(got)
    tol = rel_tol if rel_tol is not None else default_tolerance(reference)
    if not comparison.within(tol) and not _rounding_explains(module, feeds, want, got, reference):
        raise VerificationError(
            f"the training engine disagrees with ONNX Runtime on output {comparison.worst_output!r}: max abs diff "
            f"{comparison.max_abs_diff:.3g} > {tol:g} x max|output| {comparison.max_abs_reference:.3g}; not "
            f"training a model the engine does not reproduce")
    return comparison.relative


#: ``verify_engine``: how much farther than the engine's float32 result ONNX Runtime may be from the engine's
#: float64 result (two float32 implementations of the same graph round differently, by the same order).
ROUNDING_FACTOR = 8.0


def _rounding_explains(module: OnnxModule, feeds: dict[str, np.ndarray], want: list[str],
                       got32: dict[str, np.ndarray], reference: Reference) -> bool:
    import copy

    try:
        wide = copy.deepcopy(module).double()
        wide_feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
        with torch.no_grad():
            got64 = {k: v.detach().numpy() for k, v in wide(to_torch(wide_feeds), want).items()}
    except (RuntimeError, TypeError, ValueError, UnsupportedModelError):   # an op that is float32-only here: no
        return False                                                        # second opinion, the float32 check stands
    ort_outputs = {**reference.outputs, **{p.tensor: value for p, value in reference.probes.values()}}
    for name, value in got32.items():
        if name not in got64 or name not in ort_outputs or got64[name].dtype.kind != "f":
            continue
        truth = got64[name]
        ours = float(np.max(np.abs(value.astype(np.float64) - truth), initial=0.0))
        theirs = float(np.max(np.abs(np.asarray(ort_outputs[name], np.float64) - truth), initial=0.0))
        if theirs > ROUNDING_FACTOR * max(ours, np.finfo(np.float32).eps * float(np.max(np.abs(truth), initial=0.0))):
            return False
    return True
