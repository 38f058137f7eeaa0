"""Per-channel constant Mul/Add/Sub/Div after Conv/ConvTranspose (Paddle/TF-style BN) fold into the layer."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

import onnxprune
from onnxprune import CheckLevel, Checks
from onnxprune.normalize import normalize
from tests.graphs import init, model, rand


def conv_then(ops_and_consts, conv_first=True, op="Conv"):
    c = 6
    w = rand(c, 4, 3, 3) if op == "Conv" else rand(4, c, 3, 3)
    inits = [init("w", w), init("b", rand(c))]
    nodes = [helper.make_node(op, ["x", "w", "b"], ["t0"], name="conv", pads=[1, 1, 1, 1])]
    for i, (kind, const) in enumerate(ops_and_consts):
        inits.append(init(f"k{i}", const))
        ins = [f"t{i}", f"k{i}"] if conv_first else [f"k{i}", f"t{i}"]
        nodes.append(helper.make_node(kind, ins, [f"t{i + 1}"], name=f"{kind.lower()}{i}"))
    nodes.append(helper.make_node("Relu", [f"t{len(ops_and_consts)}"], ["y"], name="relu"))
    return model(nodes, [("x", ["N", 4, 8, 8])], ["y"], inits)


def fold(m):
    return onnxprune.fold(normalize(m), Checks(CheckLevel.NUMERIC))


def op_types(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize("shape", [(6, 1, 1), (1, 6, 1, 1), (1,), ()])
def test_mul_add_chain_folds(shape):
    m = conv_then([("Mul", rand(*shape, positive=True)), ("Add", rand(*shape))])
    result = fold(m)
    assert op_types(result.model) == ["Conv", "Relu"]
    assert len(result.folded) == 2


@pytest.mark.parametrize("conv_first", [True, False])
def test_sub_both_orders(conv_first):
    result = fold(conv_then([("Sub", rand(6, 1, 1))], conv_first=conv_first))
    assert op_types(result.model) == ["Conv", "Relu"]


def test_div_folds_and_constant_over_output_does_not():
    assert op_types(fold(conv_then([("Div", rand(6, 1, 1, positive=True))])).model) == ["Conv", "Relu"]
    kept = fold(conv_then([("Div", rand(6, 1, 1, positive=True))], conv_first=False))
    assert op_types(kept.model) == ["Conv", "Div", "Relu"]
    assert "not affine" in kept.skipped[0].reason


def test_convtranspose_scale_folds():
    result = fold(conv_then([("Mul", rand(1, 6, 1, 1))], op="ConvTranspose"))
    assert op_types(result.model) == ["ConvTranspose", "Relu"]


@pytest.mark.parametrize("shape", [(8,), (1, 1, 1, 8), (6, 8, 8), (1, 1, 6, 1, 1)])
def test_non_per_channel_constants_are_left(shape):
    """(8,) broadcasts along the last (width) axis, not channels; the others are spatial or grow the rank."""
    c = rand(*shape)
    result = fold(conv_then([("Mul", c)]))
    assert "Mul" in op_types(result.model)
    assert result.skipped and not result.folded


def test_residual_add_is_not_a_candidate():
    inits = [init("w", rand(4, 4, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["y"], name="residual")]
    result = fold(model(nodes, [("x", ["N", 4, 8, 8])], ["y"], inits))
    assert not result.pipeline.findings
    assert op_types(result.model) == ["Conv", "Add"]


def test_cleanup_removes_dead_nodes_and_restores_order():
    import onnx_graphsurgeon as gs

    from onnxprune.graph import to_graph
    from onnxprune.passes import Cleanup
    from onnxprune.passes.cleanup import is_topologically_sorted

    inits = [init("w", rand(4, 4, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu"),
             helper.make_node("Sigmoid", ["c"], ["dead"], name="unused")]
    graph = to_graph(normalize(model(nodes, [("x", ["N", 4, 8, 8])], ["y"], inits)))
    graph.nodes.reverse()
    assert not is_topologically_sorted(graph)
    result = Cleanup()(graph)
    assert result.modified and [n.op for n in result.graph.nodes] == ["Conv", "Relu"]
    assert is_topologically_sorted(result.graph)
    assert not Cleanup()(result.graph).modified
    assert isinstance(result.graph, gs.Graph)
