"""MACs and parameter counting.

MACs (multiply-accumulates; "FLOPs" in most pruning papers) are counted for the layers that dominate CNN cost:

- Conv:          N * Cout * prod(out spatial) * Cin/group * prod(kernel)
- ConvTranspose: N * Cin  * prod(in spatial)  * Cout/group * prod(kernel)
- Gemm:          M * N * K
- MatMul:        prod(output batch dims) * M * N * K

Dynamic dims are resolved from the given input shapes (see ``verify.resolve_input_shapes``) by re-running shape
inference on a copy of the model. Parameters are the elements of floating-point initializers (integer shape
constants are not parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.constant_fold import fold_constant_nodes, static_shapes
from onnxprune.normalize import skeleton
from onnxprune.safe_inference import infer_shapes as safe_infer_shapes

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: the same layers as ONNX Runtime's optimizer and quantizer write them: op -> (kind, data input, weight input)
_LAYERS = {
    ("", "Conv"): ("Conv", 0, 1), ("", "ConvTranspose"): ("ConvTranspose", 0, 1), ("", "Gemm"): ("Gemm", 0, 1),
    ("", "MatMul"): ("MatMul", 0, 1), ("", "ConvInteger"): ("Conv", 0, 1), ("", "MatMulInteger"): ("MatMul", 0, 1),
    ("", "QLinearConv"): ("Conv", 0, 3), ("", "QLinearMatMul"): ("MatMul", 0, 3),
    ("com.microsoft", "FusedConv"): ("Conv", 0, 1), ("com.microsoft", "FusedGemm"): ("Gemm", 0, 1),
    ("com.microsoft", "FusedMatMul"): ("MatMul", 0, 1), ("com.microsoft", "NhwcConv"): ("Conv", 0, 1),
}


@dataclass(frozen=True)
class LayerCost:
    node: str
    op: str
    macs: int | None  # None when a shape could not be resolved


@dataclass(frozen=True)
class CostReport:
    macs: int
    params: int
    layers: tuple[LayerCost, ...]
    input_shapes: dict[str, tuple[int, ...]]

    @property
    def unresolved(self) -> tuple[str, ...]:
        return tuple(layer.node for layer in self.layers if layer.macs is None)


#: weights: floating point and the 8/4-bit integer types quantized models store them in (not int32/int64
#: shape constants or biases of quantized layers)
_WEIGHT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
                 onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}


def count_params(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer
                   if t.data_type in _WEIGHT_TYPES and len(t.dims) > 0))


def _with_fixed_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    light = skeleton(model)
    del light.graph.value_info[:]
    for vi in light.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().dim_value = d
    for out in light.graph.output:  # symbolic output dims would pin intermediate dims to names
        out.type.tensor_type.ClearField("shape")
    light = _infer(light)
    # Shape arithmetic (the pads of ResNet option-A shortcuts, reshape targets computed from the input size)
    # defeats shape inference; with the inputs fixed it is all constant: fold it and infer again.
    opset = next((o.version for o in light.opset_import if o.domain in ("", "ai.onnx")), 17)
    for _ in range(8):
        if not fold_constant_nodes(light.graph, opset, static_shapes(light)).folded:
            break
        del light.graph.value_info[:]
        light = _infer(light)
    return light


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return safe_infer_shapes(model)
    except (onnx.shape_inference.InferenceError, RuntimeError):
        return model


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    table: dict[str, tuple[int, ...] | None] = {}
    g = model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
        table[vi.name] = None if -1 in dims else dims
    for init in g.initializer:
        table[init.name] = tuple(init.dims)
    return table


def _layer(node: onnx.NodeProto) -> tuple[str, int, int] | None:
    return _LAYERS.get(("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type))


def _layer_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...] | None]) -> int | None:
    def shape(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    kind, data_index, weight_index = _layer(node)  # type: ignore[misc]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x, w, y = shape(data_index), shape(weight_index), shape(0, outputs=True)
    if kind == "Conv":
        if y is None or w is None:
            return None
        return int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if kind == "ConvTranspose":
        if x is None or w is None:
            return None
        return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if kind == "Gemm":
        if x is None or y is None:
            return None
        k = x[0] if attrs.get("transA", 0) else x[1]
        return int(y[0] * y[1] * k)
    if kind == "MatMul":
        if x is None or y is None:
            return None
        return int(np.prod(y, dtype=np.int64) * x[-1])
    return None


def tensor_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]
                  ) -> dict[str, tuple[int, ...] | None]:
    """Every tensor's concrete shape at ``input_shapes`` (None where inference cannot tell)."""
    return _shape_table(_with_fixed_inputs(model, input_shapes))


def count_costs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> CostReport:
    """MACs per counted layer and in total, at the given concrete input shapes."""
    shapes = _shape_table(_with_fixed_inputs(model, input_shapes))
    layers = tuple(LayerCost(n.name or n.output[0], n.op_type, _layer_macs(n, shapes))
                   for n in model.graph.node if _layer(n) is not None)
    total = sum(layer.macs or 0 for layer in layers)
    return CostReport(total, count_params(model), layers, dict(input_shapes))
