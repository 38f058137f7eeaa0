"""Layer rules (onnxprune/channels/rules/layers.py): Conv / ConvTranspose / Gemm / MatMul / LSTM as sources and
consumers, depthwise and grouped convs, graph inputs as sources. One tiny graph per pattern: the expected groups, and a 50% prune that
equals the masked original."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.channels import analyze
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec
from tests.channels.builder import G
from tests.channels.helpers import groups, prune_verified
from tests.graphs import rand


def test_conv_bn_relu_conv():
    g = G()
    y = g.conv(g.op("Relu", [g.bn(g.conv("x", 4, 8, name="c1"), 8)]), 8, 6, name="c2")
    m = g.build(y)
    gs_ = groups(m)
    assert gs_["c1"][:2] == (8, True)
    assert gs_["c2"][1] is False and "graph output" in gs_["c2"][2]
    assert gs_["input:x"][1] is False
    r = prune_verified(m)
    w = next(t for t in r.model.graph.initializer if list(t.dims)[:2] == [4, 4])
    assert w is not None  # c1 kept 4 of 8 filters


def test_depthwise_pointwise_pass_through():
    g = G()
    c = g.conv("x", 4, 8, name="c1")
    dw = g.conv(c, 8, 8, group=8, name="dw")
    y = g.conv(g.op("Relu", [dw]), 8, 5, k=1, name="pw")
    m = g.build(y)
    a_ = analyze(normalize(m))
    group = a_.group("c1")
    assert "dw" in group.members and "pw" in group.members and group.channels == 8
    r = prune_verified(m)
    dw_node = next(n for n in r.model.graph.node if n.name == "dw")
    assert next(a.i for a in dw_node.attribute if a.name == "group") == 4


def test_grouped_conv_keeps_equal_channels_per_group():
    g = G()
    c1 = g.op("Relu", [g.conv("x", 4, 16, k=1, name="c1")])
    c2 = g.op("Relu", [g.conv(c1, 16, 16, group=4, name="grouped")])
    y = g.conv(c2, 16, 5, k=1, name="c3")
    m = g.build(y)
    a_ = analyze(normalize(m))
    assert a_.group("c1").blocks and a_.group("grouped").blocks
    r = prune_verified(m, ratio=0.5)
    node = next(n for n in r.model.graph.node if n.name == "grouped")
    w = onnx.numpy_helper.to_array(next(t for t in r.model.graph.initializer if t.name == node.input[1]))
    assert w.shape == (8, 2, 3, 3)


def test_grouped_convtranspose():
    g = G()
    c1 = g.conv("x", 4, 8, name="c1")
    ins = [c1, g.const(rand(8, 3, 4, 4)), g.const(rand(6))]
    up = g.op("ConvTranspose", ins, name="up", group=2, strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.conv(g.op("Relu", [up]), 6, 2, name="head")
    m = g.build(y)
    assert groups(m)["up"][:2] == (6, True)
    prune_verified(m)


def test_lstm_reads_pruned_features():
    """CRNN: conv (N, C, 1, W) -> squeeze -> (W, N, C) -> LSTM: W's input columns are sliced."""
    g = G(cin=4, hw=8)
    g.inputs = [("x", ["N", 4, 1, "W"])]
    c = g.op("Relu", [g.conv("x", 4, 8, name="c1", k=1)])
    seq = g.op("Transpose", [g.op("Squeeze", [c, g.const(np.array([2], np.int64))])], perm=[2, 0, 1])
    hidden = 6
    y, _, _ = g.op("LSTM", [seq, g.const(rand(1, 4 * hidden, 8)), g.const(rand(1, 4 * hidden, hidden)),
                            g.const(rand(1, 8 * hidden))], n_out=3, hidden_size=hidden, name="lstm")
    m = g.build(y)
    assert groups(m)["c1"][:2] == (8, True)
    result = prune(normalize(m), PlanOptions(ratio=0.5), spec=InputSpec({"x": (2, 4, 1, 10)}), verify=True)
    w = next(t for t in result.model.graph.initializer if list(t.dims)[:2] == [1, 4 * hidden])
    assert list(w.dims) == [1, 4 * hidden, 4]


def test_nhwc_graph_input_keeps_the_first_conv_a_source():
    """tf2onnx writes NHWC inputs transposed to NCHW before the first conv: what reaches that conv's input is
    not a tracked channel axis, but its own filters are still prunable."""
    g = G(cin=3)
    g.inputs = [("x", ["N", 16, 16, 3])]
    t = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    c = g.op("Relu", [g.conv(t, 3, 8, name="c1")])
    m = g.build(g.op("GlobalAveragePool", [g.conv(c, 8, 4, name="c2")]))
    assert groups(m)["c1"][:2] == (8, True)
    prune_verified(m)
