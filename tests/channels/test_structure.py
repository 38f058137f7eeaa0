"""Structure rules (onnxprune/channels/rules/structure.py): Concat/Split, Slice, Pad, Resize, Flatten/Reshape
(Gemm rows in channel blocks, channel shuffle), Transpose/Squeeze, Shape. One tiny graph per pattern: the expected groups, and a 50% prune that
equals the masked original."""

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
from tests.channels.helpers import groups, prune_verified
from tests.graphs import rand


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
