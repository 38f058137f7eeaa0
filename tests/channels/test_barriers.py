"""Each reason the channel rules give for leaving channels alone, one pattern per reason, written as ONNX text.

Every pattern starts from ``c = Conv(x, W)`` (layer ``c1``, 8 output channels, from a 4-channel input); the op
under test reads ``c``. Graph inputs named ``W*`` become random constant weights, ``C*`` inputs constant tensors
(see :func:`model`); anything else (``s``, ``p``...) stays a graph input, i.e. computed at run time. The test
asserts that ``c1``'s group is frozen and that its reason is exactly the rule's. (The rewrites around frozen
groups are verified in test_layers.py, test_elementwise.py and test_structure.py.)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from onnxprune.channels import analyze
from onnxprune.normalize import normalize

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'


def model(signature: str, body: str, constants: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse ``signature`` + ``body``; inputs named W*/B* become random float constants of their declared shape,
    the inputs named in ``constants`` those values."""
    m = onnx.parser.parse_model(HEAD + signature + "\n{\n" + body + "\n}")
    rng = np.random.default_rng(0)
    constants = dict(constants or {})
    for vi in m.graph.input:
        if vi.name[0] in "WB" and vi.name not in constants:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            constants[vi.name] = rng.standard_normal(shape).astype(np.float32)
    keep = [vi for vi in m.graph.input if vi.name not in constants]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items())
    return m


def reason_of(m: onnx.ModelProto, source: str = "c1") -> str:
    analysis = analyze(normalize(m))
    group = next(g for g in analysis.groups if source in g.sources)
    assert not group.prunable, f"{source} is prunable"
    return group.reason


CONV = "c = Conv <pads = [1, 1, 1, 1]> (x, W1)"
SIG = "agraph (float[N, 4, 8, 8] x, float[8, 4, 3, 3] W1{extra}) => (float[N, {out}] y)"


def sig(extra: str = "", out: str = "?, ?, ?") -> str:
    return SIG.replace("{extra}", extra).replace("{out}", out)


def named_conv(m: onnx.ModelProto) -> onnx.ModelProto:
    """Give the first Conv the name c1 (the parser leaves nodes unnamed)."""
    for node in m.graph.node:
        if node.op_type == "Conv" and not node.name:
            node.name = "c1"
            break
    for i, node in enumerate(m.graph.node):
        node.name = node.name or f"{node.op_type.lower()}{i}"
    return m


CASES = {
    # structure.py
    "reduces over the channel axis": (sig(), f"{CONV}\ny = ReduceMean <axes = [1]> (c)", {}),
    "reduces over all axes": (sig(out="?"), f"{CONV}\nr = ReduceMean <keepdims = 0> (c)\ny = Reshape(r, C)",
                              {"C": np.array([1, -1], np.int64)}),
    "reduction axes unknown": (sig(", int64[1] s"), f"{CONV}\ny = ReduceSum (c, s)", {}),
    "scales the channel axis": (sig(), f"{CONV}\ny = Resize (c, , C)", {"C": np.array([1, 2, 2, 2], np.float32)}),
    "scales computed at run time": (sig(", float[4] s"), f"{CONV}\ny = Resize (c, , s)", {}),
    "slices the channel axis with step 2": (
        sig(), f"{CONV}\ny = Slice (c, Cs, Ce, Ca, Cp)",
        {"Cs": np.array([0], np.int64), "Ce": np.array([8], np.int64), "Ca": np.array([1], np.int64),
         "Cp": np.array([2], np.int64)}),
    "slice parameters computed at run time": (
        sig(", int64[1] s"), f"{CONV}\ny = Slice (c, s, Ce, Ca)",
        {"Ce": np.array([8], np.int64), "Ca": np.array([1], np.int64)}),
    "split sizes computed at run time": (sig(", int64[2] s"), f"{CONV}\na, b = Split <axis = 1> (c, s)\ny = Add(a, b)",
                                         {}),
    "reshape mixes the channel axis with others": (sig(out="?, ?"), f"{CONV}\ny = Reshape (c, C)",
                                                   {"C": np.array([0, 16, 32], np.int64)}),
    "flattens channels with dynamic or leading dims": (sig(out="?"), f"{CONV}\ny = Flatten <axis = 2> (c)", {}),
    # elementwise.py
    "combined with a tensor whose channels are not tracked": (
        sig(", float[8, 4, 3, 3] W2, float[5, 8, 1, 1] W3"),
        f"{CONV}\nu = Conv <pads = [1, 1, 1, 1]> (x, W2)\nv = CumSum (u, Ca)\nm = Mul (c, v)\ny = Conv (m, W3)",
        {"Ca": np.array(1, np.int64)}),
    "parameters are not constant": (
        sig(", float[8] s, float[8] Bb, float[8] Bm, float[8] Bv"),
        f"{CONV}\ny = BatchNormalization (c, s, Bb, Bm, Bv)", {"Bv": np.ones(8, np.float32)}),
    "normalizes across the channel axis": (
        sig(", float[8, 8, 8] Bs"), f"{CONV}\ny = LayerNormalization <axis = 1> (c, Bs)",
        {"Bs": np.ones((8, 8, 8), np.float32)}),
    # layers.py
    "weight is not a constant tensor": (sig(", float[5, 8, 1, 1] w"), f"{CONV}\ny = Conv (c, w)", {}),
    "bias is not constant": (sig(", float[5, 8, 1, 1] W2, float[5] b"), f"{CONV}\ny = Conv (c, W2, b)", {}),
    "B or C is not a constant": (
        sig(", float[3, 512] w", out="3"), f"{CONV}\nf = Flatten (c)\ny = Gemm <transB = 1> (f, w)", {}),
    "not activation @ constant 2-D weight": (
        sig(", float[512, 3] w", out="3"), f"{CONV}\nf = Flatten (c)\ny = MatMul (f, w)", {}),
    # base.py
    "no channel rule for this op": (sig(), f"{CONV}\ny = CumSum (c, Ca)", {"Ca": np.array(1, np.int64)}),
}


@pytest.mark.parametrize("reason", list(CASES))
def test_each_barrier_reason(reason):
    signature, body, constants = CASES[reason]
    m = named_conv(model(signature, body, constants))
    onnx.checker.check_model(m)
    assert reason in reason_of(m)
