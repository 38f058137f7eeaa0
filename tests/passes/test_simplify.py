"""Exact simplifications run by ``fold``: each rule applies where it is exact and nowhere else.

Every model here keeps a dynamic batch (and some a dynamic height) so that loading does not fold the shape
arithmetic away; every fold runs with numeric checks against ONNX Runtime (optimizations disabled).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import onnxprune
from onnxprune import CheckLevel, Checks
from onnxprune.normalize import normalize
from tests.graphs import init, model


def fold(m: onnx.ModelProto, simplify: bool = True):
    return onnxprune.fold(normalize(m), Checks(CheckLevel.NUMERIC), simplify=simplify)


def ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def flatten_by_shape(index: int = 0, source: str = "x", position_first: bool = True) -> onnx.ModelProto:
    """``Reshape(x, [x.shape[index], -1])`` as the TorchScript exporter writes ``x.view(x.size(0), -1)``."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Shape", [source if source != "x" else "r"], ["s"]),
             helper.make_node("Gather", ["s", "i"], ["g"], axis=0),
             helper.make_node("Unsqueeze", ["g", "axes"], ["u"]),
             helper.make_node("Concat", ["u", "minus1"] if position_first else ["minus1", "u"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["y"], name="flatten")]
    inputs = [("x", ["N", 3, 4, 4])] + ([(source, ["N", 5])] if source != "x" else [])
    return model(nodes, inputs, ["y"], [init("i", np.asarray(index, np.int64)), init("axes", i64(0)),
                                        init("minus1", i64(-1))])


def test_reshape_to_own_batch_dim_becomes_constant_target():
    result = fold(flatten_by_shape())
    assert ops(result.model) == ["Relu", "Reshape"]
    target = next(t for t in result.model.graph.initializer if t.name == result.model.graph.node[1].input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, -1]


def test_reshape_target_from_another_position_or_tensor_is_kept():
    # x.shape[0] placed at position 1: 0 there would copy x.shape[1], not the batch
    assert "Shape" in ops(fold(flatten_by_shape(position_first=False)).model)
    # the batch of another input, even one with the same dim_param, is not provably x's batch
    assert "Shape" in ops(fold(flatten_by_shape(source="other")).model)


def test_common_subexpressions_and_equal_constants_merge():
    nodes = [helper.make_node("Shape", ["x"], ["s1"]), helper.make_node("Shape", ["x"], ["s2"]),
             helper.make_node("Gather", ["s1", "i0"], ["g1"], axis=0),
             helper.make_node("Gather", ["s2", "j0"], ["g2"], axis=0),   # an equal constant under another name
             helper.make_node("Add", ["g1", "g2"], ["sum"]),
             helper.make_node("Cast", ["sum"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "f"], ["y"])]
    m = model(nodes, [("x", ["N", 3])], ["y"], [init("i0", np.asarray(0, np.int64)), init("j0", np.asarray(0, np.int64))])
    result = fold(m)
    assert ops(result.model) == ["Shape", "Gather", "Add", "Cast", "Mul"]
    assert any(f.op == "Shape" for f in result.simplified) and not result.folded


def test_random_ops_are_never_merged():
    nodes = [helper.make_node("RandomNormalLike", ["x"], ["a"], seed=1.0),
             helper.make_node("RandomNormalLike", ["x"], ["b"], seed=1.0),
             helper.make_node("Sub", ["a", "b"], ["d"]), helper.make_node("Mul", ["d", "zero"], ["e"]),
             helper.make_node("Add", ["x", "e"], ["y"])]
    m = model(nodes, [("x", ["N", 3])], ["y"], [init("zero", np.zeros((1,), np.float32))])
    assert ops(fold(m).model).count("RandomNormalLike") == 2


def test_no_op_nodes_are_removed():
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Dropout", ["a", "ratio"], ["b"]),
             helper.make_node("Cast", ["b"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["ones", "c"], ["d"]),
             helper.make_node("Add", ["d", "zeros"], ["e"]),
             helper.make_node("Div", ["e", "one"], ["f"]),
             helper.make_node("Sub", ["f", "zero_scalar"], ["g"]),
             helper.make_node("Relu", ["g"], ["y"])]
    m = model(nodes, [("x", ["N", 3, 4, 4])], ["y"],
              [init("ones", np.ones((3, 1, 1), np.float32)), init("zeros", np.zeros((1, 3, 1, 1), np.float32)),
               init("one", np.ones((1,), np.float32)), init("zero_scalar", np.zeros((), np.float32)),
               init("ratio", np.asarray(0.5, np.float32))])
    result = fold(m)
    assert ops(result.model) == ["Relu"]
    assert result.model.graph.node[0].input[0] == "x"


def test_no_ops_that_would_change_shape_dtype_or_interface_are_kept():
    nodes = [helper.make_node("Mul", ["x", "ones5"], ["a"]),                # broadcasts rank 4 -> 5
             helper.make_node("Cast", ["x", ], ["c"], to=TensorProto.DOUBLE),  # a real cast
             helper.make_node("Identity", ["x"], ["y"])]                    # writes a graph output
    m = model(nodes, [("x", ["N", 3, 4, 4])], ["a", "c", "y"], [init("ones5", np.ones((1, 1, 1, 1, 1), np.float32))])
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.DOUBLE
    result = fold(m)
    assert ops(result.model) == ["Mul", "Cast", "Identity"]
    assert [o.name for o in result.model.graph.output] == ["a", "c", "y"]
    assert any(f.op == "Mul" and "broadcast" in f.reason for f in result.pipeline.findings if not f.applied)


def test_slices_on_different_axes_merge_and_on_one_axis_do_not():
    def two_slices(axes2: int) -> onnx.ModelProto:
        nodes = [helper.make_node("Slice", ["x", "s", "e", "a2", "st"], ["t"]),
                 helper.make_node("Slice", ["t", "s", "e", f"a{axes2}", "st"], ["y"])]
        return model(nodes, [("x", ["N", 3, 9, 9])], ["y"],
                     [init("s", i64(0)), init("e", i64(2**62)), init("a2", i64(2)), init("a3", i64(-1)),
                      init("st", i64(2))])
    assert ops(fold(two_slices(3)).model) == ["Slice"]
    assert ops(fold(two_slices(2)).model) == ["Slice", "Slice"]


def test_nested_concats_flatten():
    nodes = [helper.make_node("Concat", ["x", "x"], ["inner"], axis=1),
             helper.make_node("Concat", ["x", "inner", "x"], ["y"], axis=1),
             helper.make_node("Concat", ["x", "x"], ["other_axis"], axis=2),
             helper.make_node("Concat", ["other_axis", "other_axis"], ["z"], axis=1)]
    m = model(nodes, [("x", ["N", 3, 4])], ["y", "z"], [])
    assert ops(fold(m).model) == ["Concat", "Concat", "Concat"]


def test_simplify_off_leaves_the_graph_as_loaded():
    m = flatten_by_shape()
    assert ops(fold(m, simplify=False).model) == ops(normalize(m))


def test_cli_no_simplify(tmp_path):
    from onnxprune.cli.main import main

    onnx.save(flatten_by_shape(), tmp_path / "m.onnx")
    assert main(["fold", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"), "--verify", "-q"]) == 0
    assert main(["fold", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b.onnx"), "--no-simplify", "-q"]) == 0
    assert len(onnx.load(tmp_path / "a.onnx").graph.node) == 2
    assert len(onnx.load(tmp_path / "b.onnx").graph.node) == 6


def test_simplified_zoo_model_matches_with_dynamic_batch():
    """A real export (TorchScript, dynamic batch): ShuffleNetV2's channel shuffle reads the shape of its input
    three times per block; after simplify every block reads it once and outputs match."""
    from models.zoo_cache import zoo_model

    m = onnx.load(zoo_model("shufflenet_v2", "legacy_bn"))
    with_simplify, without = fold(m), fold(m, simplify=False)
    assert ops(with_simplify.model).count("Shape") < ops(without.model).count("Shape")
    assert len(with_simplify.model.graph.node) < len(without.model.graph.node)
    assert with_simplify.pipeline.comparison.max_abs_diff <= 1e-5 * max(1.0, with_simplify.pipeline.comparison.max_abs_reference)
