"""ONNX shape inference that a small hostile model cannot use to exhaust memory.

ONNX's data propagation (``data_prop=True``) computes the values of shape-like tensors, and for ``Range`` it
materializes the whole sequence in C++: a 300-byte model with ``Range(0, 256000000, 1)`` makes
``infer_shapes`` allocate gigabytes (and ``std::bad_alloc`` or the OOM killer ends the process). Data
propagation is therefore used only when every ``Range`` has constant inputs and a length of at most
:data:`MAX_PROPAGATED_ELEMENTS`; otherwise shapes are inferred without it (fewer static dims, never a crash).
"""

from __future__ import annotations

import math

import onnx
from onnx import numpy_helper

MAX_PROPAGATED_ELEMENTS = 1 << 20


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = a.t
    return out


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _graphs(g)


def _range_length(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> float:
    try:
        start, limit, delta = (float(numpy_helper.to_array(constants[x]).reshape(-1)[0]) for x in node.input[:3])
    except (KeyError, IndexError, ValueError):
        return math.inf  # computed at run time: unbounded as far as propagation knows
    if not delta or not all(math.isfinite(v) for v in (start, limit, delta)):
        return math.inf
    return max(0.0, math.ceil((limit - start) / delta))


def propagation_is_bounded(model: onnx.ModelProto) -> bool:
    """Whether data propagation stays small: every Range has constant inputs and a bounded length."""
    for graph in _graphs(model.graph):
        ranges = [n for n in graph.node if n.op_type == "Range"]
        if not ranges:
            continue
        constants = _constants(graph)
        if any(_range_length(n, constants) > MAX_PROPAGATED_ELEMENTS for n in ranges):
            return False
    return True


def infer_shapes(model: onnx.ModelProto, data_prop: bool = True, **kwargs: bool) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` with data propagation only when it is bounded (see module doc)."""
    return onnx.shape_inference.infer_shapes(model, data_prop=data_prop and propagation_is_bounded(model),
                                             **kwargs)
