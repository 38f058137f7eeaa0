"""A compressed model ONNX Runtime runs directly and that stays small on disk (``compress --runnable``).

- A shared weight becomes ``Gather(codebook, Cast(indices, int32))``: an index tensor of the weight's shape —
  ``uint4`` (two per byte) when the codebook has at most 16 entries and the model's opset is >= 21 (the first
  with 4-bit types), else ``uint8`` (``uint16`` above 8 bits) — plus the float codebook. ONNX Runtime folds the constant subgraph at load, so it
  runs at the speed of the dense model.
- A non-shared (pruned-only) weight becomes a ``sparse_initializer`` (COO, linear int64 indices) when that is
  smaller than dense; ONNX Runtime densifies it at load.

Unstructured sparsity therefore saves disk and download, not CPU time. The runnable file is larger than the
``.onnxz`` container (no Huffman coding, one index byte per weight) but compresses well with zip/gzip.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compression.pipeline import DecodedTensor, decode
from onnxprune.errors import InvalidModelError


def runnable(data: bytes, source: str = "container") -> onnx.ModelProto:
    """An ONNX model from container bytes whose weights are index tensors + codebooks or sparse tensors."""
    model, tensors = decode(data, source)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    graph = model.graph
    input_names = {i.name for i in graph.input}
    new_nodes: list[onnx.NodeProto] = []
    for t in tensors:
        if t.name in input_names:  # an initializer also listed as a graph input: keep it dense
            graph.initializer.append(numpy_helper.from_array(t.values, t.name))
            continue
        if t.codebook is not None and t.indices is not None:
            new_nodes += _gathered(graph, t, opset)
        else:
            _sparse(graph, t)
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    # not full_check: ONNX's shape inference types a sparse initializer as sparse_tensor and rejects it as a
    # Conv weight, although ONNX Runtime densifies it at load (the pipeline runs the result in ORT instead)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"{source}: the runnable model is invalid: {' '.join(str(e).split())[:300]}") from None
    return model


def _uint4(name: str, indices: np.ndarray) -> onnx.TensorProto:
    """A UINT4 tensor, packed two per byte, low nibble first (the ONNX layout)."""
    flat = indices.astype(np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.UINT4, list(indices.shape), packed.tobytes(), raw=True)


def _gathered(graph: onnx.GraphProto, t: DecodedTensor, opset: int) -> list[onnx.NodeProto]:
    assert t.codebook is not None and t.indices is not None
    graph.initializer.append(numpy_helper.from_array(t.codebook, f"{t.name}__codebook"))
    if t.codebook.size <= 16 and opset >= 21:
        graph.initializer.append(_uint4(f"{t.name}__indices", t.indices))
    else:
        index_type = np.uint8 if t.codebook.size <= 256 else np.uint16
        graph.initializer.append(numpy_helper.from_array(t.indices.astype(index_type), f"{t.name}__indices"))
    cast = helper.make_node("Cast", [f"{t.name}__indices"], [f"{t.name}__indices_i32"], to=TensorProto.INT32,
                            name=f"{t.name}__cast")
    gather = helper.make_node("Gather", [f"{t.name}__codebook", f"{t.name}__indices_i32"], [t.name], axis=0,
                              name=f"{t.name}__gather")
    return [cast, gather]


def _sparse(graph: onnx.GraphProto, t: DecodedTensor) -> None:
    flat = t.values.reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size * (8 + flat.itemsize) >= flat.nbytes:
        graph.initializer.append(numpy_helper.from_array(t.values, t.name))
        return
    values = numpy_helper.from_array(flat[nz], t.name)
    indices = numpy_helper.from_array(nz.astype(np.int64), f"{t.name}__indices")
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(t.values.shape)))
