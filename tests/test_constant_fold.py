"""Constants computed by nodes (Identity aliases, Reshape(bias), Transpose(W), shape arithmetic) are folded on
load, so every rule sees them; bombs are not materialized; shared constants stay correct when one reader
changes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.channels import analyze
from onnxprune.constant_fold import MAX_GROWTH_ELEMENTS, fold_constant_nodes
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec, Reference
from tests.channels.builder import G
from tests.graphs import rand


def ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


def conv_bn_chain(alias: bool) -> onnx.ModelProto:
    """conv -> BN -> relu -> conv -> BN -> relu -> conv; with ``alias`` the second BN reads the first BN's
    parameters through Identity nodes (the TorchScript exporter's de-duplication of equal tensors)."""
    g = G()
    ones, zeros = g.const(np.ones(8, np.float32)), g.const(np.zeros(8, np.float32))
    c1 = g.conv("x", 4, 8, name="c1", bias=False)
    b1 = g.op("BatchNormalization", [c1, ones, zeros, zeros, ones], name="bn1")
    c2 = g.conv(g.op("Relu", [b1]), 8, 8, name="c2", bias=False)
    params = [g.op("Identity", [t]) for t in (ones, zeros, zeros, ones)] if alias else \
        [g.const(np.ones(8, np.float32)), g.const(np.zeros(8, np.float32)), g.const(np.zeros(8, np.float32)),
         g.const(np.ones(8, np.float32))]
    b2 = g.op("BatchNormalization", [c2, *params], name="bn2")
    return g.build(g.conv(g.op("Relu", [b2]), 8, 3, name="c3"))


def summary(m: onnx.ModelProto) -> tuple[object, ...]:
    import onnxprune

    s = onnxprune.inspect(normalize(m))
    return (s.batchnorm_foldable, len(s.batchnorm), {g["id"]: (g["channels"], g["prunable"]) for g in s.groups})


def test_identity_aliases_fold_like_the_plain_model():
    aliased, plain = conv_bn_chain(alias=True), conv_bn_chain(alias=False)
    assert "Identity" not in ops(normalize(aliased))
    assert summary(aliased) == summary(plain) == (2, 2, summary(plain)[2])
    assert summary(aliased)[2]["c1"] == summary(aliased)[2]["c2"] == (8, True)
    import onnxprune

    folded = onnxprune.fold(normalize(aliased)).model
    assert "BatchNormalization" not in ops(folded)
    ref = Reference.of(normalize(aliased), InputSpec(batch=2))
    assert ref.compare(folded).within(1e-5)


def test_paddle_bias_through_reshape_is_a_per_channel_constant():
    g = G()
    c = g.conv("x", 4, 8, name="c1", bias=False)
    bias = g.op("Reshape", [g.const(rand(8)), g.const(np.array([1, -1, 1, 1], np.int64))])
    y = g.conv(g.op("Relu", [g.op("Add", [c, bias], name="bias_add")]), 8, 3, name="c2")
    m = g.build(y)
    assert "Reshape" not in ops(normalize(m))
    assert analyze(normalize(m)).group("c1").prunable
    result = prune(normalize(m), PlanOptions(ratio=0.5), spec=InputSpec(batch=2), verify=True)
    assert result.report.groups_pruned == 1
    import onnxprune

    assert ops(onnxprune.fold(normalize(m)).model).count("Add") == 0  # the bias folds into the conv


def test_transposed_linear_weight_folds():
    """``Linear`` on a 4-D input without exporter constant folding: ``MatMul(x, Transpose(W))``."""
    g = G()
    t = g.op("Transpose", [g.conv("x", 4, 8, name="c1")], perm=[0, 2, 3, 1])
    w = g.op("Transpose", [g.const(rand(6, 8))], perm=[1, 0])
    m = g.build(g.op("MatMul", [t, w], name="fc"))
    assert ops(normalize(m)) == ["Conv", "Transpose", "MatMul"]
    assert analyze(normalize(m)).group("c1").prunable


def test_constant_of_shape_bomb_is_not_materialized():
    g = G()
    big = g.op("ConstantOfShape", [g.const(np.array([4096, 4096, 64], np.int64))],
               value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    s = g.op("ReduceSum", [big], keepdims=0)
    y = g.op("Add", [g.conv("x", 4, 8, name="c1"), s])
    m = normalize(g.build(y))
    assert "ConstantOfShape" in ops(m)
    assert max(int(np.prod(t.dims)) for t in m.graph.initializer) <= MAX_GROWTH_ELEMENTS


def test_growth_is_capped_but_shrinking_folds():
    graph = helper.make_graph(
        [helper.make_node("Expand", ["s", "shape"], ["e"]), helper.make_node("Add", ["x", "e"], ["y"]),
         helper.make_node("Reshape", ["w", "flat"], ["wf"]), helper.make_node("Add", ["y", "wf"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 512])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [512, 512])],
        [helper.make_tensor("s", TensorProto.FLOAT, [1], [1.0]),
         helper.make_tensor("shape", TensorProto.INT64, [2], [512, 512]),
         helper.make_tensor("w", TensorProto.FLOAT, [512 * 512], np.zeros(512 * 512).tolist()),
         helper.make_tensor("flat", TensorProto.INT64, [2], [512, 512])])
    report = fold_constant_nodes(graph, 17)
    assert [n.op_type for n in graph.node] == ["Expand", "Add", "Add"]  # Reshape folded, Expand kept
    assert report.folded == 1 and "Expand" in report.skipped[0][1]


def test_random_ops_and_graph_outputs_are_not_folded():
    graph = helper.make_graph(
        [helper.make_node("RandomUniformLike", ["c"], ["r"]), helper.make_node("Identity", ["c"], ["out"]),
         helper.make_node("Add", ["x", "r"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [helper.make_tensor("c", TensorProto.FLOAT, [2], [1.0, 2.0])])
    fold_constant_nodes(graph, 17)
    assert [n.op_type for n in graph.node] == ["RandomUniformLike", "Identity", "Add"]


def test_static_dims_fold_dynamic_dims_stay():
    """``x.size(1) // 2`` (static) becomes a number; the batch dim read the same way stays a Shape."""
    g = G()
    c = g.conv("x", 4, 8, name="c1")
    shape = g.op("Shape", [c])
    half = g.op("Div", [g.op("Gather", [shape, g.const(np.array(1, np.int64))], axis=0),
                        g.const(np.array(2, np.int64))])
    batch = g.op("Gather", [shape, g.const(np.array(0, np.int64))], axis=0)
    target = g.op("Concat", [g.op("Unsqueeze", [batch, g.const(np.array([0], np.int64))]),
                             g.op("Unsqueeze", [half, g.const(np.array([0], np.int64))]),
                             g.const(np.array([-1], np.int64))], axis=0)
    m = normalize(g.build(g.op("Reshape", [c, target])))
    concat = next(n for n in m.graph.node if n.op_type == "Concat")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    assert inits[concat.input[1]].tolist() == [4]
    assert concat.input[0] not in inits and "Shape" in ops(m)


def test_shared_constant_changed_for_one_reader_only():
    """Two convs read one weight (a de-duplicated tensor); pruning the group behind one leaves the other's
    weight as it was."""
    g = G()
    a = g.op("Relu", [g.conv("x", 4, 8, name="a")])
    b = g.op("Relu", [g.conv("x", 4, 8, name="b")])
    w = g.const(rand(6, 8, 3, 3))
    ya = g.op("Conv", [a, w], name="ca", pads=[1, 1, 1, 1])
    yb = g.op("Conv", [b, g.op("Identity", [w])], name="cb", pads=[1, 1, 1, 1])
    m = normalize(g.build(g.op("Add", [ya, yb])))
    reads = [n.input[1] for n in m.graph.node if n.name in ("ca", "cb")]
    assert reads[0] == reads[1]  # the alias resolved to one shared initializer
    result = prune(m, PlanOptions(ratio=0.5, exclude=("b",)), spec=InputSpec(batch=2), verify=True)
    shapes = {n.name: [list(t.dims) for t in result.model.graph.initializer if t.name == n.input[1]][0]
              for n in result.model.graph.node if n.name in ("ca", "cb")}
    assert shapes == {"ca": [6, 4, 3, 3], "cb": [6, 8, 3, 3]}


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_squeeze_unsqueeze_fold_at_every_opset(opset):
    """Opset 11 carries axes as attributes, 13+ as inputs: the reference evaluator runs the node's own opset."""
    axes_attr = opset < 13
    nodes = [helper.make_node("Unsqueeze", ["b"] if axes_attr else ["b", "ax"], ["b4"],
                              **({"axes": [0, 2, 3]} if axes_attr else {})),
             helper.make_node("Add", ["x", "b4"], ["y"])]
    inits = [helper.make_tensor("b", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])]
    if not axes_attr:
        inits.append(helper.make_tensor("ax", TensorProto.INT64, [3], [0, 2, 3]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])], inits)
    fold_constant_nodes(graph, opset)
    assert [n.op_type for n in graph.node] == ["Add"]
    folded = next(t for t in graph.initializer if t.name == "b4")
    assert list(folded.dims) == [1, 3, 1, 1]
