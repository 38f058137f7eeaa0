"""Element-wise rules (onnxprune/channels/rules/elementwise.py): passthrough, joins (residual Add, SE Mul),
normalizations across or beside the channel axis, and the base rule for ops without one. One tiny graph per pattern: the expected groups, and a 50% prune that
equals the masked original."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.channels import analyze
from onnxprune.normalize import normalize
from tests.channels.builder import G
from tests.channels.helpers import groups, prune_verified
from tests.graphs import rand


def test_residual_add_is_one_group():
    g = G()
    a = g.op("Relu", [g.conv("x", 4, 8, name="stem")])
    b = g.conv(g.op("Relu", [g.conv(a, 8, 6, name="inner")]), 6, 8, name="c2")
    s = g.op("Add", [a, b], name="res")
    y = g.conv(g.op("Relu", [s]), 8, 3, name="head")
    m = g.build(y)
    a_ = analyze(normalize(m))
    stem = a_.group("stem")
    assert set(stem.sources) == {"stem", "c2"} and stem.prunable and stem.channels == 8
    assert a_.group("inner").prunable
    prune_verified(m)


def test_squeeze_excitation():
    g = G()
    x = g.op("HardSwish", [g.conv("x", 4, 8, name="c1")])
    s = g.op("GlobalAveragePool", [x])
    s = g.op("Relu", [g.conv(s, 8, 4, k=1, name="fc1")])
    s = g.op("HardSigmoid", [g.conv(s, 4, 8, k=1, name="fc2")])
    gated = g.op("Mul", [x, s], name="gate")
    y = g.conv(gated, 8, 3, name="head")
    m = g.build(y)
    a_ = analyze(normalize(m))
    assert set(a_.group("c1").sources) == {"c1", "fc2"}
    assert a_.group("fc1").prunable
    prune_verified(m)


def test_transpose_squeeze_unsqueeze_reduce_and_prelu():
    g = G()
    c = g.op("PRelu", [g.conv("x", 4, 8, name="c1"), g.const(rand(8, 1, 1))])
    t = g.op("Transpose", [c], perm=[0, 2, 3, 1])                                  # channels last
    t = g.op("Transpose", [t], perm=[0, 3, 1, 2])                                  # back
    r = g.op("ReduceMean", [t], axes=[2, 3], keepdims=0)                            # N x 8
    u = g.op("Unsqueeze", [r, g.const(np.array([2, 3], dtype=np.int64))])            # N x 8 x 1 x 1
    s = g.op("Squeeze", [u, g.const(np.array([3], dtype=np.int64))])                 # N x 8 x 1
    y = g.op("MatMul", [g.op("Squeeze", [s, g.const(np.array([2], dtype=np.int64))]), g.const(rand(8, 3))])
    m = g.build(y)
    assert groups(m)["c1"][:2] == (8, True)
    prune_verified(m)


def test_layernorm_over_channels_freezes_with_its_reason_and_the_mlp_prunes():
    """ConvNeXt: dw conv -> NHWC -> LayerNorm(C) -> Linear(4C) -> GELU -> Linear(C) -> NCHW -> + x."""
    g = G(cin=8)
    stem = g.conv("x", 8, 8, name="stem")
    dw = g.conv(stem, 8, 8, k=7, group=8, name="dw")
    t = g.op("Transpose", [dw], perm=[0, 2, 3, 1])
    ln = g.op("LayerNormalization", [t, g.const(rand(8)), g.const(rand(8))], axis=-1, name="ln")
    h = g.op("Add", [g.op("MatMul", [ln, g.const(rand(8, 32))], name="pw1"), g.const(rand(32))])
    h = g.op("Gelu", [h]) if g.opset >= 20 else g.op("Relu", [h])
    y = g.op("Mul", [g.op("MatMul", [h, g.const(rand(32, 8))], name="pw2"), g.const(rand(8))])
    out = g.op("Add", [stem, g.op("Transpose", [y], perm=[0, 3, 1, 2])])
    m = g.build(g.op("GlobalAveragePool", [g.op("Relu", [out])]))
    gs_ = groups(m)
    assert gs_["stem"][1] is False and "LayerNormalization 'ln' normalizes across the channel axis" in gs_["stem"][2]
    assert gs_["pw1"][:2] == (32, True)
    prune_verified(m)


def test_layernorm_over_other_axes_passes_channels():
    g = G()
    c = g.conv("x", 4, 8, name="c1")
    ln = g.op("LayerNormalization", [c, g.const(rand(8)), g.const(rand(8))], axis=-1)  # over W
    m = g.build(g.conv(ln, 8, 4, name="c2"))
    assert groups(m)["c1"][1] is True
    prune_verified(m)


@pytest.mark.parametrize("opset,attrs,prunable", [(17, {"axis": 1}, False), (17, {}, True), (11, {}, False),
                                                  (11, {"axis": 3}, True)])
def test_softmax_axis_and_opset(opset, attrs, prunable):
    """Softmax before opset 13 flattens from ``axis`` (default 1) on: the channel axis is among them."""
    g = G(opset=opset)
    m = g.build(g.conv(g.op("Softmax", [g.conv("x", 4, 8, name="c1")], **attrs), 8, 4, name="c2"))
    assert groups(m)["c1"][1] is prunable
    if prunable:
        prune_verified(m)
    else:
        assert "Softmax" in groups(m)["c1"][2]


def test_unknown_op_is_a_barrier_with_its_name():
    g = G()
    c = g.op("LRN", [g.conv("x", 4, 8, name="c1")], size=3, name="lrn")
    y = g.conv(c, 8, 4, name="c2")
    gs_ = groups(g.build(y))
    assert gs_["c1"][1] is False and "LRN 'lrn'" in gs_["c1"][2]
