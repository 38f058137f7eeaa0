"""Fold inference-mode BatchNormalization into the layer before it.

Rule: ``BN(y) = y * s + t`` per channel with ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``; when
``y`` comes from a Conv (plain, grouped, depthwise), ConvTranspose, Gemm or a MatMul with a constant 2-D weight
(optionally followed by its bias Add), ``s`` and ``t`` are multiplied into that layer's weight and bias (see
``passes._affine``) and the BN node disappears. Computed in float64, cast back to the weight dtype.

Left untouched, with a reason: BN in training mode or with its running-statistics outputs in use; non-constant
BN parameters; a producer whose output has other readers or is a graph output; any other producer op; a
MatMul whose output rank is not 2 (then BN's channel axis 1 is not the weight's column axis).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph import NameAllocator, constant_value, is_default_domain
from onnxprune.pass_infra import Finding, GraphPass, PassResult
from ._affine import AffineTarget, apply_affine, bypass, drop_disconnected, find_target


def batchnorm_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | str:
    """(scale, shift) in float64 for a BN node, or the reason it cannot be folded."""
    if int(bn.attrs.get("training_mode", 0)) == 1:
        return "training_mode=1: statistics are computed at run time"
    if any(t.outputs for t in bn.outputs[1:]):
        return "its running mean/variance outputs are used"
    params = [constant_value(t) for t in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return "scale, bias, mean or variance is not a constant"
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def match(graph: gs.Graph, bn: gs.Node) -> tuple[AffineTarget, np.ndarray, np.ndarray] | str:
    """What folding ``bn`` would do, or why it cannot (read-only)."""
    affine = batchnorm_affine(bn)
    if isinstance(affine, str):
        return affine
    target = find_target(graph, bn.inputs[0], channel_axis_rank=2)
    if isinstance(target, str):
        return target
    scale, shift = affine
    if scale.shape[0] != target.channels:
        return f"BN has {scale.shape[0]} channels, {target.layer.op} {target.layer.name!r} has {target.channels}"
    return target, scale, shift


def is_batchnorm(node: gs.Node) -> bool:
    return node.op == "BatchNormalization" and is_default_domain(node)


class FoldBatchNorm(GraphPass):
    """Fold BatchNormalization into the preceding Conv / ConvTranspose / Gemm / MatMul(+Add)."""

    name = "fold-batchnorm"

    def call(self, graph: gs.Graph) -> PassResult:
        findings: list[Finding] = []
        names = NameAllocator(graph)
        for bn in [n for n in graph.nodes if is_batchnorm(n)]:
            m = match(graph, bn)
            if isinstance(m, str):
                findings.append(Finding(bn.name, bn.op, False, m))
                continue
            target, scale, shift = m
            data_input = bn.inputs[0]
            apply_affine(graph, names, target, scale, shift)
            bypass(bn, data_input)
            findings.append(Finding(bn.name, bn.op, True, f"folded into {target.layer.op} {target.layer.name!r}"))
        modified = any(f.applied for f in findings)
        if modified:
            drop_disconnected(graph)
        return PassResult(graph, modified, tuple(findings))
