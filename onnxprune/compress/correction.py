"""Empirical bias correction after pruning and sharing (as in Nagel et al. 2019 for quantization): for each
coded Conv/Gemm in topological order, the mean of its output over calibration data — per output channel — is
moved back to the original model's, by adding the difference to its bias. Each layer is corrected on the
inputs produced by the already-corrected layers before it. MatMul layers (no bias) are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.data import Dataset
from onnxprune.recover import collect


def _channel_mean(y: np.ndarray, op: str) -> np.ndarray:
    if op == "Conv":
        return y.mean(axis=(0, *range(2, y.ndim)), dtype=np.float64)
    return y.reshape(-1, y.shape[-1]).mean(axis=0, dtype=np.float64)


def bias_correct(original: onnx.ModelProto, model: onnx.ModelProto, data: Dataset, weights: set[str]) -> list[str]:
    """Correct, in place, the bias of every Conv/Gemm of ``model`` whose weight is in ``weights``; returns the
    corrected layer names. ``original`` is the model before pruning/sharing (same node names)."""
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1
             and n.input[1] in weights and not (n.op_type == "Gemm" and _attr(n, "transA", 0))]
    if not nodes:
        return []
    targets = collect(original, [n.output[0] for n in nodes], data)
    inits = {t.name: t for t in model.graph.initializer}
    done = []
    for node in nodes:
        y = collect(model, [node.output[0]], data)[node.output[0]]
        delta = _channel_mean(targets[node.output[0]], node.op_type) - _channel_mean(y, node.op_type)
        w = numpy_helper.to_array(inits[node.input[1]])
        scale = _attr(node, "beta", 1.0) if node.op_type == "Gemm" else 1.0
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            if bias.shape != delta.shape:  # a broadcast Gemm C: leave it
                continue
        else:
            bias = np.zeros_like(delta)
        name = f"{node.name or node.output[0]}__corrected_bias"
        new = numpy_helper.from_array((bias + delta / scale).astype(w.dtype), name)
        model.graph.initializer.append(new)
        inits[name] = new
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        done.append(node.name)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used or t.name in {o.name for o in model.graph.output}]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return done


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)
