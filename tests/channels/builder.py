"""A small builder for channel-pattern test graphs (NCHW float32, dynamic batch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.graphs import init, model, rand


class G:
    def __init__(self, cin: int = 4, hw: int = 8, opset: int = 17) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs = [("x", ["N", cin, hw, hw])]
        self.opset = opset
        self.n = 0

    def _name(self, op: str) -> str:
        self.n += 1
        return f"{op.lower()}{self.n}"

    def const(self, arr: np.ndarray, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(init(name, np.asarray(arr)))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        name = name or self._name(op)
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if n_out > 1 else outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, name: str | None = None,
             bias: bool = True, stride: int = 1) -> str:
        ins = [x, self.const(rand(cout, cin // group, k, k))]
        if bias:
            ins.append(self.const(rand(cout)))
        return self.op("Conv", ins, name=name, pads=[k // 2] * 4, group=group, strides=[stride, stride])

    def bn(self, x: str, c: int) -> str:
        params = [self.const(rand(c, positive=True)), self.const(rand(c)), self.const(rand(c)),
                  self.const(rand(c, positive=True))]
        return self.op("BatchNormalization", [x, *params])

    def build(self, *outputs: str) -> onnx.ModelProto:
        return model(self.nodes, self.inputs, list(outputs), self.inits, self.opset)
