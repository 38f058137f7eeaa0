"""One tiny graph per channel pattern: the expected groups, and a 50% prune that equals the masked original."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.channels import analyze
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec, make_session
from tests.channels.builder import G
from tests.graphs import rand


def groups(m: onnx.ModelProto) -> dict[str, tuple[int, bool, str]]:
    return {g.id: (g.channels, g.prunable, g.reason) for g in analyze(normalize(m)).groups}


def prune_verified(m: onnx.ModelProto, ratio: float = 0.5, **kw):
    result = prune(normalize(m), PlanOptions(ratio=ratio, **kw), spec=InputSpec(batch=2), verify=True)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.report.max_abs_diff <= 1e-5 * result.report.max_abs_output
    return result


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


def test_concat_offsets_and_split_sizes():
    g = G()
    a = g.conv("x", 4, 6, name="a")
    b = g.conv("x", 4, 10, name="b")
    cat = g.op("Concat", [a, b], axis=1, name="cat")
    halves = g.op("Split", [cat, g.const(np.array([8, 8], dtype=np.int64))], n_out=2, axis=1, name="split")
    y = g.op("Add", [g.conv(halves[0], 8, 4, name="ca"), g.conv(halves[1], 8, 4, name="cb")])
    m = g.build(y)
    gs_ = groups(m)
    assert gs_["a"][:2] == (6, True) and gs_["b"][:2] == (10, True)
    r = prune_verified(m)
    split = next(n for n in r.model.graph.node if n.op_type == "Split")
    sizes = onnx.numpy_helper.to_array(next(t for t in r.model.graph.initializer if t.name == split.input[1]))
    assert sizes.sum() == 3 + 5


def test_split_halves_joined_like_c2f():
    g = G()
    cv1 = g.conv("x", 4, 8, name="cv1")
    y0, y1 = g.op("Split", [cv1], n_out=2, axis=1, name="split")  # equal split, no sizes input
    m1 = g.op("Add", [y1, g.conv(y1, 4, 4, name="bott")], name="res")
    out = g.conv(g.op("Concat", [y0, y1, m1], axis=1), 12, 5, k=1, name="cv2")
    m = g.build(out)
    a_ = analyze(normalize(m))
    group = a_.group("cv1")
    assert set(group.sources) == {"cv1", "bott"} and group.channels == 8
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


@pytest.mark.parametrize("via", ["flatten", "reshape_const", "reshape_dynamic"])
def test_flatten_gemm_rows_in_channel_blocks(via):
    g = G(hw=8)
    c = g.op("MaxPool", [g.conv("x", 4, 6, name="c1")], kernel_shape=[2, 2], strides=[2, 2])  # 6 x 4 x 4
    if via == "flatten":
        flat = g.op("Flatten", [c], axis=1)
    elif via == "reshape_const":
        flat = g.op("Reshape", [c, g.const(np.array([-1, 96], dtype=np.int64))])
    else:  # torch's x.view(x.size(0), -1) through the legacy exporter
        batch = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [c]), g.const(np.array(0, dtype=np.int64))],
                                        axis=0), g.const(np.array([0], dtype=np.int64))])
        shape = g.op("Concat", [batch, g.const(np.array([-1], dtype=np.int64))], axis=0)
        flat = g.op("Reshape", [c, shape])
    h = g.op("Relu", [g.op("Gemm", [flat, g.const(rand(10, 96)), g.const(rand(10))], transB=1, name="fc1")])
    y = g.op("Gemm", [h, g.const(rand(10, 3)), g.const(rand(3))], name="fc2")
    m = g.build(y)
    gs_ = groups(m)
    assert gs_["c1"][:2] == (6, True) and gs_["fc1"][:2] == (10, True)
    r = prune_verified(m)
    fc1 = next(n for n in r.model.graph.node if n.name == "fc1")
    w = onnx.numpy_helper.to_array(next(t for t in r.model.graph.initializer if t.name == fc1.input[1]))
    assert w.shape == (5, 48)  # 3 channels x 16 positions


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


def test_unknown_op_is_a_barrier_with_its_name():
    g = G()
    c = g.op("LRN", [g.conv("x", 4, 8, name="c1")], size=3, name="lrn")
    y = g.conv(c, 8, 4, name="c2")
    gs_ = groups(g.build(y))
    assert gs_["c1"][1] is False and "LRN 'lrn'" in gs_["c1"][2]


@pytest.mark.parametrize("pads,mode,prunable", [([0, 0, 1, 1, 0, 0, 1, 1], "constant", True),
                                               ([0, 1, 0, 0, 0, 1, 0, 0], "constant", True),
                                               ([0, 1, 0, 0, 0, 1, 0, 0], "reflect", False)])
def test_pad_on_spatial_vs_channel_axis(pads, mode, prunable):
    """Constant padding of the channel axis (ResNet option-A shortcuts) maps channels exactly; reflection does
    not (a padded channel copies a real one)."""
    g = G()
    c = g.op("Pad", [g.conv("x", 4, 8, name="c1"), g.const(np.array(pads, dtype=np.int64))], name="pad", mode=mode)
    y = g.op("GlobalAveragePool", [g.conv(c, 8 + 2 * pads[1], 4, name="c2")])
    m = g.build(y)
    assert groups(m)["c1"][1] is prunable
    if prunable:
        prune_verified(m)
    else:
        assert "reflect mode" in groups(m)["c1"][2]


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


def test_static_channel_count_read_by_shape_is_a_constant():
    """A channel count shape inference knows is folded to a number on load: the pruned model keeps computing
    with it, as the masked original does (its channels are still there, zeroed)."""
    g = G()
    c = g.conv("x", 4, 8, name="c1")
    n_ch = g.op("Gather", [g.op("Shape", [c], name="shape"), g.const(np.array(1, dtype=np.int64))], axis=0)
    n_ch = g.op("Cast", [n_ch], to=onnx.TensorProto.FLOAT)
    y = g.op("Relu", [g.conv(c, 8, 4, name="c2")])
    m = g.build(y, n_ch)
    assert "Shape" not in {n.op_type for n in normalize(m).graph.node}
    assert groups(m)["c1"][1] is True
    result = prune_verified(m)
    got = make_session(result.model).run(None, {"x": rand(2, 4, 8, 8)})
    assert float(got[1]) == 8.0


def test_resize_with_sizes_is_rewritten():
    g = G(hw=4)
    c = g.conv("x", 4, 8, name="c1")
    sizes = g.const(np.array([1, 8, 8, 8], dtype=np.int64))
    up = g.op("Resize", [c, "", "", sizes], mode="nearest")
    g.inputs = [("x", [1, 4, 4, 4])]
    y = g.conv(up, 8, 2, name="head")
    prune_verified(g.build(y))


def test_opset11_split_attribute_is_rewritten():
    g = G(opset=11)
    a, b = g.op("Split", [g.conv("x", 4, 8, name="c1")], n_out=2, axis=1, split=[4, 4])
    y = g.op("Add", [g.conv(a, 4, 3, name="ca"), g.conv(b, 4, 3, name="cb")])
    r = prune_verified(g.build(y), ratio=0.25)
    split = next(n for n in r.model.graph.node if n.op_type == "Split")
    assert sum(next(x.ints for x in split.attribute if x.name == "split")) == 6


# ------------------------------------------------------------------ patterns of real exports (issue 13)
def test_channel_slice_chunks_are_exact():
    """``a, b = x.chunk(2, dim=1)`` as Slice nodes with constant bounds (INT_MAX end included)."""
    g = G()
    c = g.op("Relu", [g.conv("x", 4, 16, name="c1")])
    a = g.op("Slice", [c, g.const(np.array([0], np.int64)), g.const(np.array([8], np.int64)),
                       g.const(np.array([1], np.int64))], name="first")
    b = g.op("Slice", [c, g.const(np.array([8], np.int64)), g.const(np.array([2**62], np.int64)),
                       g.const(np.array([1], np.int64))], name="second")
    y = g.op("Add", [g.conv(a, 8, 4, name="ca"), g.conv(b, 8, 4, name="cb")])
    m = g.build(y)
    assert groups(m)["c1"][:2] == (16, True)
    for ratio in (0.25, 0.5):
        prune_verified(m, ratio=ratio)


def test_channel_slice_with_a_step_is_a_barrier():
    g = G()
    c = g.conv("x", 4, 16, name="c1")
    s = g.op("Slice", [c, g.const(np.array([0], np.int64)), g.const(np.array([16], np.int64)),
                       g.const(np.array([1], np.int64)), g.const(np.array([2], np.int64))], name="every_other")
    m = g.build(g.conv(s, 8, 4, name="c2"))
    assert groups(m)["c1"][1] is False and "step 2" in groups(m)["c1"][2]


def shuffle_net(per: int = 8, groups_: int = 2) -> onnx.ModelProto:
    """Two branches concatenated, channel-shuffled (Reshape -> Transpose -> Reshape), split, consumed."""
    c = per * groups_
    g = G()
    a = g.op("Relu", [g.conv("x", 4, per, name="left")])
    b = g.op("Relu", [g.conv("x", 4, per, name="right")])
    cat = g.op("Concat", [a, b], axis=1)
    r = g.op("Reshape", [cat, g.const(np.array([0, groups_, per, 8, 8], np.int64))], name="split_groups")
    t = g.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    s = g.op("Reshape", [t, g.const(np.array([0, c, 8, 8], np.int64))], name="merge_groups")
    h1, h2 = g.op("Split", [s, g.const(np.array([c // 2, c // 2], np.int64))], n_out=2, axis=1)
    y = g.op("Add", [g.conv(h1, c // 2, 4, name="u"), g.conv(h2, c // 2, 4, name="v")])
    return g.build(y)


def test_channel_shuffle_is_a_permutation():
    m = shuffle_net()
    a = analyze(normalize(m))
    assert a.group("left").prunable and a.group("right").prunable
    layout = next(lay for name, lay in a.layouts.items() if name.startswith("merge_groups"))
    left, right = a.group("left").units, a.group("right").units
    assert a.roots[layout.elems].tolist() == [int(u) for pair in zip(left, right) for u in pair]


@pytest.mark.parametrize("exclude", [(), ("right",)], ids=["both", "one-branch"])
def test_pruned_shuffle_becomes_a_gather(exclude):
    """Any kept set is exact (one branch pruned and the other not breaks the grouped form)."""
    result = prune_verified(shuffle_net(), ratio=0.5, exclude=exclude)
    ops_ = [n.op_type for n in result.model.graph.node]
    assert "Gather" in ops_ and "Transpose" not in ops_


def test_shuffle_with_unmatched_dims_is_a_barrier():
    """Splitting the channel axis while also moving spatial dims into the batch is not a shuffle."""
    g = G()
    c = g.conv("x", 4, 16, name="c1")
    r = g.op("Reshape", [c, g.const(np.array([-1, 2, 8, 4, 8], np.int64))])   # batch x2, height /2
    t = g.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    s = g.op("Reshape", [t, g.const(np.array([-1, 16, 8, 8], np.int64))])
    m = g.build(g.conv(s, 16, 4, name="c2"))
    assert groups(m)["c1"][1] is False


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


@pytest.mark.parametrize("target,width", [([0, 8, -1], "W"), ([0, 0, -1], "W"), ([0, -1, 12], 12)])
def test_reshape_keeping_the_channel_axis(target, width):
    """(N, C, 1, W) -> (N, C, W) as a Reshape (CRNN heads), with a constant, 0 or -1 channel entry (-1 needs
    the width stated)."""
    g = G()
    g.inputs = [("x", ["N", 4, 1, width])]
    c = g.op("Relu", [g.conv("x", 4, 8, name="c1", k=1)])
    r = g.op("Reshape", [c, g.const(np.array(target, np.int64))], name="seq")
    m = g.build(g.op("MatMul", [g.op("Transpose", [r], perm=[0, 2, 1]), g.const(rand(8, 5))]))
    assert groups(m)["c1"][:2] == (8, True)
    result = prune(normalize(m), PlanOptions(ratio=0.5), spec=InputSpec({"x": (2, 4, 1, 12)}), verify=True)
    assert result.report.groups_pruned == 1


def test_shared_computed_reshape_target_is_cloned():
    """The dynamo exporter shares one computed target between reshapes of different groups."""
    g = G()
    g.inputs = [("x", ["N", 4, 8, 8])]
    n = g.op("Gather", [g.op("Shape", ["x"]), g.const(np.array([0], np.int64))], axis=0)
    target = g.op("Concat", [n, g.const(np.array([8, 64], np.int64))], axis=0)
    outs = []
    for name in ("a", "b"):
        c = g.op("Relu", [g.conv("x", 4, 8, name=name)])
        r = g.op("Reshape", [c, target], name=f"r{name}")
        outs.append(g.op("MatMul", [g.op("Transpose", [r], perm=[0, 2, 1]), g.const(rand(8, 3))]))
    m = g.build(g.op("Add", outs))
    result = prune(normalize(m), PlanOptions(ratio=0.5, exclude=("b",)), spec=InputSpec(batch=2), verify=True)
    assert result.report.groups_pruned == 1


def test_rank_unknown_without_input_shapes_is_resolved_with_them():
    """Squeeze without axes: the rank depends on which dims are 1, so it is unknown for a dynamic input; with
    --input-shape the analysis takes it from the concrete shapes (ranks only)."""
    g = G()
    g.inputs = [("x", ["N", 4, 1, "W"])]
    c = g.op("Relu", [g.conv("x", 4, 8, name="c1", k=1)])
    seq = g.op("Transpose", [g.op("Squeeze", [c])], perm=[0, 2, 1])               # (N, W, C)
    y = g.op("Add", [g.op("MatMul", [seq, g.const(rand(8, 5))], name="fc"), g.const(rand(5))])
    m = g.build(y)
    assert groups(m)["c1"][1] is False
    shapes = {"x": (2, 4, 1, 10)}
    assert analyze(normalize(m), shapes).group("c1").prunable
    result = prune(normalize(m), PlanOptions(ratio=0.5), spec=InputSpec(shapes), verify=True)
    assert result.report.groups_pruned == 1


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


def upsample_to(sizes_from_channels: str) -> onnx.ModelProto:
    """FPN top-down: Resize(deep, sizes=Concat(Shape(deep)[:2], Shape(skip)[2:])) + lateral conv(skip)."""
    g = G()
    g.inputs = [("x", ["N", 4, "H", "W"])]
    skip = g.op("Relu", [g.conv("x", 4, 8, name="skip")])
    deep = g.op("Relu", [g.conv(skip, 8, 8, name="deep", stride=2)])
    head = g.op("Slice", [g.op("Shape", [deep]), g.const(np.array([0], np.int64)), g.const(np.array([2], np.int64))])
    if sizes_from_channels == "computed":  # the channel count goes through arithmetic: not followed
        head = g.op("Mul", [head, g.const(np.array([1, 1], np.int64))])
    tail = g.op("Slice", [g.op("Shape", [skip]), g.const(np.array([2], np.int64)), g.const(np.array([4], np.int64))])
    sizes = g.op("Concat", [head, tail], axis=0)
    up = g.op("Resize", [deep, "", "", sizes], mode="nearest", name="up")
    y = g.op("Add", [g.conv(skip, 8, 8, name="lateral", k=1), up])
    return g.build(g.op("GlobalAveragePool", [g.conv(y, 8, 4, name="out")]))


def test_resize_to_another_tensors_size():
    m = upsample_to("read")
    gs_ = groups(m)
    assert gs_["deep"][1] is True and gs_["skip"][1] is True
    result = prune(normalize(m), PlanOptions(ratio=0.5), spec=InputSpec({"x": (2, 4, 16, 12)}), verify=True)
    assert result.report.groups_pruned == 2


def test_channel_count_computed_with_at_run_time_freezes():
    gs_ = groups(upsample_to("computed"))
    assert gs_["deep"][1] is False and "read at run time" in gs_["deep"][2]
