"""Tiny hand-built ONNX graphs for pattern tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def rand(*shape: int, dtype=np.float32, positive: bool = False) -> np.ndarray:
    a = RNG.standard_normal(shape)
    return (np.abs(a) + 0.5 if positive else a).astype(dtype)


def init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def bn_inits(prefix: str, c: int, dtype=np.float32) -> list[onnx.TensorProto]:
    return [init(f"{prefix}_scale", rand(c, dtype=dtype, positive=True)), init(f"{prefix}_bias", rand(c, dtype=dtype)),
            init(f"{prefix}_mean", rand(c, dtype=dtype)), init(f"{prefix}_var", rand(c, dtype=dtype, positive=True))]


def bn_node(prefix: str, x: str, y: str, **attrs) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean",
                                                   f"{prefix}_var"], [y], name=prefix, epsilon=1e-3, **attrs)


def model(nodes, inputs, outputs, inits, opset: int = 17, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(n, elem, s) for n, s in inputs]
    outs = [helper.make_tensor_value_info(n, elem, None) for n in outputs]
    g = helper.make_graph(nodes, "g", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 15 else 8
    return onnx.shape_inference.infer_shapes(m)


def conv_bn(cin=4, cout=6, group=1, bias=True, opset=17, dtype=np.float32, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    inits = [init("w", rand(cout, cin // group, 3, 3, dtype=dtype))] + bn_inits("bn", cout, dtype)
    conv_in = ["x", "w"]
    if bias:
        inits.append(init("b", rand(cout, dtype=dtype)))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["c"], name="conv", pads=[1, 1, 1, 1], group=group),
             bn_node("bn", "c", "y")]
    return model(nodes, [("x", ["N", cin, 8, 8])], ["y"], inits, opset, elem)
