"""The one place that knows onnx-graphsurgeon's quirks.

Passes work on ``gs.Graph``. This module converts to and from ``onnx.ModelProto`` (keeping the model-level
fields graphsurgeon drops), answers producer/consumer questions, reads constant values whether they are
initializers or Constant nodes, and copies a weight before it is changed when several nodes share it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.normalize import infer_shapes


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def to_model(graph: gs.Graph, template: onnx.ModelProto, *, reinfer: bool = False) -> onnx.ModelProto:
    """Export ``graph`` and restore the model-level fields of ``template`` (IR version, metadata, doc...).

    ``reinfer=True`` clears every intermediate shape and runs shape inference again: use it after any edit
    that changes a tensor's shape (graphsurgeon would otherwise keep stale value_info).
    """
    if reinfer:
        clear_intermediate_shapes(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = template.ir_version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if template.HasField(field) and not model.HasField(field):
            setattr(model, field, getattr(template, field))
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    _keep_opset_versions(model, template)
    if reinfer:
        infer_shapes(model, clear=True)
    return model


def _keep_opset_versions(model: onnx.ModelProto, template: onnx.ModelProto) -> None:
    wanted = {op.domain: op.version for op in template.opset_import}
    have = {op.domain: op.version for op in model.opset_import}
    wanted.update({d: v for d, v in have.items() if d not in wanted})
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in wanted.items())


def clear_intermediate_shapes(graph: gs.Graph) -> None:
    """Forget the shape of every tensor that is not a graph input or output (dtype is kept)."""
    io = {t.name for t in (*graph.inputs, *graph.outputs)}
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Variable) and name not in io:
            tensor.shape = None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of an initializer or a Constant node's output; None for anything computed at run time."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, or None when it is absent or given as the empty name."""
    if index >= len(node.inputs):
        return None
    t = node.inputs[index]
    return None if (isinstance(t, gs.Variable) and t.name == "" ) else t


class NameAllocator:
    """Hands out tensor/node names not yet used in a graph (scans the graph once, not per name)."""

    def __init__(self, graph: gs.Graph) -> None:
        self._taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes}

    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self._taken:
            i += 1
            name = f"{hint}_{i}"
        self._taken.add(name)
        return name


def set_constant_input(names: NameAllocator, node: gs.Node, index: int, values: np.ndarray,
                       name_hint: str) -> gs.Constant:
    """Give ``node`` a new constant at input ``index`` (appending empty inputs if needed).

    A fresh tensor is always created, so a weight shared with other nodes is never changed under them.
    """
    const = gs.Constant(names.fresh(name_hint), np.ascontiguousarray(values))
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = const
    return const


def float_dtype(values: np.ndarray) -> np.dtype:
    """The dtype to cast a float64 computation back to: the tensor's own if it is floating point."""
    return values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float32)


def is_default_domain(node: gs.Node) -> bool:
    """graphsurgeon reports the default ONNX domain as None (or "" / "ai.onnx" depending on the source)."""
    return node.domain in (None, "", "ai.onnx")
