"""Fold a per-channel constant Mul / Add / Sub / Div that follows a Conv or ConvTranspose into its weights.

Paddle and TensorFlow exports often write BatchNorm (or a scale layer) as ``Conv -> Mul(c) -> Add(d)``. Rule:
the op's other operand is a constant that broadcasts along the channel axis only (scalar, ``(C,)`` would be
wrong and is refused, ``(C, 1, 1)``, ``(1, C, 1, 1)``...). Then

- ``y * c``  -> scale c          - ``y + c`` / ``c + y`` -> shift c
- ``y - c``  -> shift -c         - ``c - y``             -> scale -1, shift c
- ``y / c``  -> scale 1/c (c without zeros)

is folded into the layer's weight and bias, and the op disappears. Chains (Mul then Add) fold one after the
other. Left untouched, with a reason: the layer's output has other readers, the constant is not per-channel
(or would broadcast the output to a larger shape), ``c / y``, integer constants.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph import NameAllocator, constant_value, is_default_domain, producer
from onnxprune.pass_infra import Finding, GraphPass, PassResult
from ._affine import apply_affine, bypass, drop_disconnected, find_target

AFFINE_OPS = ("Mul", "Add", "Sub", "Div")


def _per_channel(c: np.ndarray, rank: int, channels: int) -> np.ndarray | str:
    """The constant as a float64 vector of length ``channels``, or why it is not a per-channel constant."""
    if c.ndim > rank:
        return f"constant of rank {c.ndim} would broadcast the rank-{rank} output"
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return f"constant of shape {list(c.shape)} is not per-channel for a rank-{rank} output with {channels} channels"
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,)).copy()


def match(graph: gs.Graph, node: gs.Node):
    """(target, data_input, scale, shift) for an affine op after a Conv/ConvTranspose, a reason why such a
    candidate cannot fold, or None when ``node`` is no candidate (e.g. a residual Add of two activations)."""
    if len(node.inputs) != 2:
        return None
    data_index = next((i for i in (0, 1) if producer(node.inputs[i]) is not None
                       and producer(node.inputs[i]).op in ("Conv", "ConvTranspose")), None)
    if data_index is None:
        return None
    c = constant_value(node.inputs[1 - data_index])
    if c is None:
        return None
    if not np.issubdtype(c.dtype, np.floating):
        return f"constant has non-float dtype {c.dtype}"
    data = node.inputs[data_index]
    target = find_target(graph, data)
    if isinstance(target, str):
        return target
    weight = constant_value(target.layer.inputs[1])
    vec = _per_channel(c, weight.ndim, target.channels)
    if isinstance(vec, str):
        return vec
    ones, zeros = np.ones_like(vec), np.zeros_like(vec)
    if node.op == "Mul":
        scale, shift = vec, zeros
    elif node.op == "Add":
        scale, shift = ones, vec
    elif node.op == "Sub":
        scale, shift = (ones, -vec) if data_index == 0 else (-ones, vec)
    else:  # Div
        if data_index != 0:
            return "constant divided by the layer output is not affine"
        if np.any(vec == 0):
            return "divisor has zeros"
        scale, shift = 1.0 / vec, zeros
    return target, data, scale, shift


class FoldChannelAffine(GraphPass):
    """Fold per-channel constant Mul/Add/Sub/Div after Conv/ConvTranspose into the layer."""

    name = "fold-channel-affine"

    def call(self, graph: gs.Graph) -> PassResult:
        findings: list[Finding] = []
        names = NameAllocator(graph)
        for node in list(graph.nodes):
            if node.op not in AFFINE_OPS or not is_default_domain(node) or not node.outputs:
                continue
            m = match(graph, node)
            if m is None:
                continue
            if isinstance(m, str):
                findings.append(Finding(node.name, node.op, False, m))
                continue
            target, data, scale, shift = m
            apply_affine(graph, names, target, scale, shift)
            bypass(node, data)
            findings.append(Finding(node.name, node.op, True, f"folded into {target.layer.op} {target.layer.name!r}"))
        modified = any(f.applied for f in findings)
        if modified:
            drop_disconnected(graph)
        return PassResult(graph, modified, tuple(findings))
