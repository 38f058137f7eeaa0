"""Shared core of the folding passes: apply a per-output-channel affine map ``y -> y * scale + shift`` to the
layer that produces ``y`` by rewriting its constant weights.

Supported producers and their output-channel layout:

- Conv            weight (Cout, Cin/group, k...), bias (Cout)
- ConvTranspose   weight (Cin, Cout/group, k...), bias (Cout); output channel o = g * Cout/group + j
- Gemm            Y = alpha * A' B' + beta * C; output channels are Y's columns; alpha and beta become 1
- MatMul          X @ W with a constant 2-D W; the bias lives in a following Add (created when missing)

All arithmetic is done in float64 and cast back to the weight's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph import (constant_value, consumers, float_dtype, is_default_domain, is_graph_output,
                             NameAllocator, optional_input, producer, set_constant_input)

PRODUCER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class AffineTarget:
    """A layer whose output channels can absorb a per-channel affine map.

    ``layer`` is the Conv/ConvTranspose/Gemm/MatMul; ``bias_add`` the ``Add`` carrying a MatMul's bias (or
    None); ``output`` the tensor the affine map is applied to (the layer's, or the bias Add's, output).
    """

    layer: gs.Node
    bias_add: gs.Node | None
    output: gs.Tensor
    channels: int


def find_target(graph: gs.Graph, tensor: gs.Tensor, channel_axis_rank: int | None = None) -> AffineTarget | str:
    """The foldable layer producing ``tensor``, or a reason why there is none.

    ``tensor`` must be used by exactly one node (the one being folded) and not be a graph output, otherwise
    changing it would change what other readers see.
    """
    node = producer(tensor)
    if node is None:
        return f"input {tensor.name!r} is not produced by a layer (graph input or initializer)"
    if len(consumers(tensor)) != 1 or is_graph_output(graph, tensor):
        readers = len(consumers(tensor)) - 1 + int(is_graph_output(graph, tensor))
        return f"{node.op} {node.name!r} output has {readers} other reader(s); folding would change them"
    bias_add = None
    if node.op == "Add" and is_default_domain(node):
        # layer + Add(bias): a Linear at opset < 13 or from TF converters (MatMul + Add), a conv bias written
        # as its own Add (Paddle: Conv + Add(Reshape(bias)))
        layer_tensor = _layer_before_bias_add(node)
        if layer_tensor is None:
            return f"preceded by Add {node.name!r}, not a Conv/ConvTranspose/Gemm/MatMul(+bias)"
        if len(consumers(layer_tensor)) != 1 or is_graph_output(graph, layer_tensor):
            return f"{producer(layer_tensor).op} output before bias Add {node.name!r} has other readers"
        bias_add, node = node, producer(layer_tensor)
    if node.op not in PRODUCER_OPS or not is_default_domain(node):
        return f"preceded by {node.op} {node.name!r}, not a Conv/ConvTranspose/Gemm/MatMul"
    weight = constant_value(optional_input(node, 1))
    if weight is None or not np.issubdtype(weight.dtype, np.floating):
        return f"{node.op} {node.name!r} weight is not a constant float tensor"
    if node.op in ("Conv", "ConvTranspose", "Gemm"):
        b = optional_input(node, 2)
        if b is not None and constant_value(b) is None:
            return f"{node.op} {node.name!r} bias is not constant"
    if node.op == "Gemm":
        if weight.ndim != 2:
            return f"Gemm {node.name!r} weight is not 2-D"
        channels = weight.shape[0] if node.attrs.get("transB", 0) else weight.shape[1]
    elif node.op == "MatMul":
        if weight.ndim != 2:
            return f"MatMul {node.name!r} weight is not 2-D"
        out_shape = node.outputs[0].shape
        if channel_axis_rank is not None and (out_shape is None or len(out_shape) != channel_axis_rank):
            return (f"MatMul {node.name!r} output rank is {'unknown' if out_shape is None else len(out_shape)}; "
                    f"its columns are the channel axis only for rank {channel_axis_rank}")
        channels = weight.shape[1]
    elif node.op == "Conv":
        channels = weight.shape[0]
    else:
        channels = weight.shape[1] * int(node.attrs.get("group", 1))
    if bias_add is not None and _bias_vector(bias_add, channels) is None:
        return f"bias Add {bias_add.name!r} does not add one constant per channel of {node.op} {node.name!r}"
    return AffineTarget(node, bias_add, bias_add.outputs[0] if bias_add else node.outputs[0], channels)


def _layer_before_bias_add(add: gs.Node) -> gs.Tensor | None:
    """The operand of ``add`` that a layer produces while the other is a float constant (its bias)."""
    for i in (0, 1):
        src = producer(add.inputs[i])
        bias = constant_value(add.inputs[1 - i])
        if src is not None and src.op in PRODUCER_OPS and is_default_domain(src) and bias is not None \
                and np.issubdtype(bias.dtype, np.floating):
            return add.inputs[i]
    return None


def _bias_index(add: gs.Node) -> int:
    return 0 if constant_value(add.inputs[0]) is not None else 1


def _bias_vector(add: gs.Node, channels: int) -> np.ndarray | None:
    """The bias Add's constant as one value per channel, or None unless it holds exactly that: (C,) or (1, C)
    after a MatMul/Gemm, (C, 1, 1) or (1, C, 1, 1) after a conv."""
    layer = producer(add.inputs[1 - _bias_index(add)])
    bias = constant_value(add.inputs[_bias_index(add)])
    if bias.size != channels:
        return None
    channel_axis_from_end = 1 if layer.op in ("MatMul", "Gemm") else constant_value(layer.inputs[1]).ndim - 1
    dims = list(bias.shape)
    if channels > 1 and (len(dims) < channel_axis_from_end or dims[len(dims) - channel_axis_from_end] != channels):
        return None
    return bias.astype(np.float64).reshape(-1)


def apply_affine(graph: gs.Graph, names: NameAllocator, target: AffineTarget, scale: np.ndarray,
                 shift: np.ndarray) -> None:
    """Rewrite ``target``'s weights so its output becomes ``output * scale + shift`` per channel.

    ``scale`` and ``shift`` are float64 vectors of length ``target.channels``.
    """
    node = target.layer
    w = constant_value(node.inputs[1])
    dtype = float_dtype(w)
    w64 = w.astype(np.float64)
    hint = node.inputs[1].name or f"{node.name}_weight"
    if target.bias_add is not None and node.op != "MatMul":
        # the layer's own bias is scaled; the shift goes into the Add's constant with it
        add, idx = target.bias_add, _bias_index(target.bias_add)
        old = constant_value(add.inputs[idx])
        new = _bias_vector(add, target.channels) * scale + shift
        set_constant_input(names, add, idx, new.reshape(old.shape).astype(float_dtype(old)),
                           f"{add.inputs[idx].name or 'bias'}_folded")
        shift = np.zeros_like(shift)
    if node.op == "Conv":
        w64 *= scale.reshape((-1,) + (1,) * (w.ndim - 1))
        _set_bias(names, node, 2, scale, shift, dtype)
    elif node.op == "ConvTranspose":
        group = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        w64.reshape((group, cin // group, cout_g) + w.shape[2:])[...] *= \
            scale.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))
        _set_bias(names, node, 2, scale, shift, dtype)
    elif node.op == "Gemm":
        alpha = float(node.attrs.get("alpha", 1.0))
        beta = float(node.attrs.get("beta", 1.0))
        w64 = w64 * alpha * (scale[:, None] if node.attrs.get("transB", 0) else scale[None, :])
        c = constant_value(optional_input(node, 2))
        c64 = np.zeros(target.channels) if c is None else beta * c.astype(np.float64)
        set_constant_input(names, node, 2, (c64 * scale + shift).astype(dtype), f"{node.name or 'gemm'}_bias")
        node.attrs["alpha"] = 1.0
        node.attrs["beta"] = 1.0
    else:  # MatMul
        w64 = w64 * scale[None, :]
        if target.bias_add is not None:
            idx = _bias_index(target.bias_add)
            b = constant_value(target.bias_add.inputs[idx]).astype(np.float64)
            set_constant_input(names, target.bias_add, idx, (b * scale + shift).astype(dtype),
                               f"{target.bias_add.inputs[idx].name or 'bias'}_folded")
        else:
            _append_bias_add(graph, names, node, shift.astype(dtype))
    set_constant_input(names, node, 1, w64.astype(dtype), f"{hint}_folded")


def _set_bias(names: NameAllocator, node: gs.Node, index: int, scale: np.ndarray, shift: np.ndarray,
              dtype: np.dtype) -> None:
    b = constant_value(optional_input(node, index))
    b64 = np.zeros_like(scale) if b is None else b.astype(np.float64)
    set_constant_input(names, node, index, (b64 * scale + shift).astype(dtype), f"{node.name or node.op}_bias_folded")


def _append_bias_add(graph: gs.Graph, names: NameAllocator, matmul: gs.Node, bias: np.ndarray) -> None:
    """Insert ``Add(matmul_out, bias)`` right after a MatMul; the Add takes over the MatMul's output tensor."""
    out = matmul.outputs[0]
    inner = gs.Variable(names.fresh(f"{out.name}_nobias"), dtype=out.dtype, shape=out.shape)
    matmul.outputs[0] = inner
    const = gs.Constant(names.fresh(f"{matmul.name or 'matmul'}_bias_folded"), bias)
    add = gs.Node("Add", name=names.fresh(f"{matmul.name or 'matmul'}_bias"), inputs=[inner, const], outputs=[out])
    graph.nodes.insert(graph.nodes.index(matmul) + 1, add)  # keeps the node list topologically sorted


def bypass(node: gs.Node, data_input: gs.Tensor) -> None:
    """Disconnect ``node`` (a BN or affine op reading ``data_input``): whatever produces ``data_input`` now
    writes ``node``'s output tensor instead, so graph output names are kept and the node order stays
    topological. The caller drops the disconnected node (:func:`drop_disconnected`)."""
    src = producer(data_input)
    assert src is not None
    folded_out = node.outputs[0]
    node.outputs.clear()
    node.inputs.clear()
    src.outputs[[t is data_input for t in src.outputs].index(True)] = folded_out


def drop_disconnected(graph: gs.Graph) -> None:
    """Remove nodes left without outputs (by identity: graphsurgeon's Node equality is slow)."""
    graph.nodes = [n for n in graph.nodes if n.outputs]
