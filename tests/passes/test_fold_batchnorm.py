"""BatchNorm folding: tiny graphs per pattern, then every zoo model in every export form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxprune
from onnxprune import CheckLevel, Checks, InputSpec
from onnxprune.normalize import normalize
from onnxprune.verify import make_session, random_inputs, resolve_input_shapes, run
from tests.conftest import ZOO_CASES
from tests.graphs import bn_inits, bn_node, conv_bn, init, model, rand

NUMERIC = Checks(CheckLevel.NUMERIC)


def fold_and_compare(m: onnx.ModelProto, rel_tol: float = 1e-5, batch: int = 2):
    """Fold with per-pass checks on, then compare once more independently (ORT optimizations off)."""
    m = normalize(m)
    result = onnxprune.fold(m, NUMERIC)
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_inputs(m, resolve_input_shapes(m, InputSpec(batch=batch)), seed=123)
    ref = run(make_session(m), feeds)
    got = run(make_session(result.model), feeds)
    for name in ref:
        scale = max(np.abs(ref[name]).max(), 1e-30)
        assert np.abs(ref[name].astype(np.float64) - got[name]).max() <= rel_tol * scale, name
    return result


def ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize("group,bias", [(1, True), (1, False), (2, True), (4, False)])
def test_conv_bn_folds(group, bias):
    cin = 4
    m = conv_bn(cin=cin, cout=4 if group == 4 else 6, group=group, bias=bias)
    result = fold_and_compare(m)
    assert ops(result.model) == ["Conv"]
    assert [f.applied for f in result.pipeline.findings] == [True]


def test_depthwise_conv_bn_folds():
    m = conv_bn(cin=8, cout=8, group=8)
    assert ops(fold_and_compare(m).model) == ["Conv"]


@pytest.mark.parametrize("opset", [11, 13, 15, 21])
def test_opsets(opset):
    assert ops(fold_and_compare(conv_bn(opset=opset)).model) == ["Conv"]


def test_float16_model_stays_float16():
    m = conv_bn(dtype=np.float16, elem=TensorProto.FLOAT16)
    result = fold_and_compare(m, rel_tol=5e-3)
    w = next(t for t in result.model.graph.initializer if len(t.dims) == 4)
    assert w.data_type == TensorProto.FLOAT16


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_convtranspose_bn_folds(group, bias):
    cin, cout = 4, 6
    inits = [init("w", rand(cin, cout // group, 4, 4))] + bn_inits("bn", cout)
    inputs = ["x", "w"] + (["b"] if bias else [])
    if bias:
        inits.append(init("b", rand(cout)))
    nodes = [helper.make_node("ConvTranspose", inputs, ["c"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
                              group=group), bn_node("bn", "c", "y")]
    m = model(nodes, [("x", ["N", cin, 5, 5])], ["y"], inits)
    assert ops(fold_and_compare(m).model) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), ()])
def test_gemm_bn_folds(trans_b, c_shape):
    k, n = 7, 5
    inits = [init("B", rand(n, k) if trans_b else rand(k, n))] + bn_inits("bn", n)
    inputs = ["x", "B"]
    if c_shape is not None:
        inits.append(init("C", rand(*c_shape)))
        inputs.append("C")
    nodes = [helper.make_node("Gemm", inputs, ["g"], name="fc", transB=trans_b, alpha=0.7, beta=1.3),
             bn_node("bn", "g", "y")]
    m = model(nodes, [("x", ["N", k])], ["y"], inits)
    result = fold_and_compare(m)
    assert ops(result.model) == ["Gemm"]
    gemm = result.model.graph.node[0]
    assert {a.name: a.f for a in gemm.attribute}.get("alpha", 1.0) == 1.0


def test_matmul_with_and_without_bias_folds():
    k, n = 7, 5
    inits = [init("W", rand(k, n)), init("b", rand(n)), init("W2", rand(n, n))] + bn_inits("bn", n) + bn_inits("bn2", n)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
             bn_node("bn", "a", "r"),
             helper.make_node("MatMul", ["r", "W2"], ["m2"], name="mm2"),
             bn_node("bn2", "m2", "y")]
    m = model(nodes, [("x", ["N", k])], ["y"], inits)
    result = fold_and_compare(m)
    assert ops(result.model) == ["MatMul", "Add", "MatMul", "Add"]


def test_matmul_rank3_is_left_with_reason():
    inits = [init("W", rand(6, 4))] + bn_inits("bn", 4)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"), bn_node("bn", "m", "y")]
    m = model(nodes, [("x", ["N", 4, 6])], ["y"], inits)
    result = fold_and_compare(m)
    assert ops(result.model) == ["MatMul", "BatchNormalization"]
    assert "rank" in result.skipped[0].reason


def test_training_mode_bn_is_left():
    m = conv_bn(opset=15)
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    bn.output.extend(["running_mean", "running_var"])
    result = onnxprune.fold(normalize(m))
    assert "training_mode" in result.skipped[0].reason
    assert "BatchNormalization" in ops(result.model)


def test_conv_output_with_two_readers_is_left():
    inits = [init("w", rand(6, 4, 3, 3))] + bn_inits("bn", 6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             bn_node("bn", "c", "y"), helper.make_node("Relu", ["c"], ["z"], name="relu")]
    m = model(nodes, [("x", ["N", 4, 8, 8])], ["y", "z"], inits)
    result = fold_and_compare(m)
    assert not result.folded and "other reader" in result.skipped[0].reason


def test_conv_output_that_is_a_graph_output_is_left():
    inits = [init("w", rand(6, 4, 3, 3))] + bn_inits("bn", 6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), bn_node("bn", "c", "y")]
    m = model(nodes, [("x", ["N", 4, 8, 8])], ["y", "c"], inits)
    assert not fold_and_compare(m).folded


def test_non_constant_bn_parameters_are_left():
    inits = [init("w", rand(6, 4, 3, 3))] + bn_inits("bn", 6)[1:]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), bn_node("bn", "c", "y")]
    m = model(nodes, [("x", ["N", 4, 8, 8]), ("bn_scale", [6])], ["y"], inits)
    result = onnxprune.fold(normalize(m))
    assert "not a constant" in result.skipped[0].reason


def test_shared_weight_is_copied_before_folding():
    """Two convs share one weight; each is followed by its own BN: both fold, to different weights."""
    inits = [init("w", rand(6, 4, 3, 3))] + bn_inits("bn1", 6) + bn_inits("bn2", 6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             bn_node("bn1", "c1", "y1"), bn_node("bn2", "c2", "y2")]
    m = model(nodes, [("x", ["N", 4, 8, 8])], ["y1", "y2"], inits)
    result = fold_and_compare(m)
    weights = {n.input[1] for n in result.model.graph.node if n.op_type == "Conv"}
    assert len(result.folded) == 2 and len(weights) == 2


def test_bn_output_name_is_kept_as_graph_output():
    result = fold_and_compare(conv_bn())
    assert [o.name for o in result.model.graph.output] == ["y"]
    assert result.model.graph.node[0].output[0] == "y"


def test_constant_node_weights_fold():
    """Paddle-style: weights in Constant nodes are lifted by load, then folded."""
    m = conv_bn()
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in m.graph.initializer]
    del m.graph.initializer[:]
    nodes = consts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    assert ops(fold_and_compare(m).model) == ["Conv"]


def test_input_model_is_not_modified():
    m = normalize(conv_bn())
    before = m.SerializeToString()
    onnxprune.fold(m)
    assert m.SerializeToString() == before


@pytest.mark.parametrize("name,form", ZOO_CASES)
def test_zoo_model_folds_exactly(zoo_path, name, form):
    m = onnxprune.load(zoo_path(name, form))
    bn_before = ops(m).count("BatchNormalization")
    result = fold_and_compare(m)
    remaining = ops(result.model).count("BatchNormalization")
    skipped_bn = [f for f in result.skipped if f.op == "BatchNormalization"]
    assert remaining == len(skipped_bn), "every BN left in the model has a stated reason"
    assert len(result.folded) >= bn_before - remaining
    if name != "densenet":  # DenseNet's pre-activation BNs follow Concat/pooling: nothing to fold into
        assert remaining == 0
    else:
        assert all("not a Conv" in f.reason or "other reader" in f.reason for f in skipped_bn)
    # folding removes work: the folded model is never slower to evaluate in node count
    assert len(result.model.graph.node) <= len(m.graph.node)


@pytest.mark.parametrize("opset", [11, 13, 20, 21])
@pytest.mark.parametrize("name", ["studentnet", "mobilenet_v3_se", "convtranspose_decoder"])
def test_zoo_models_across_opsets(name, opset):
    """The legacy exporter writes opsets 11..20; 21 comes from ONNX's version converter."""
    from onnx import version_converter

    from models.architectures import ZOO
    from models.export_zoo import export

    proto = export(ZOO[name], "legacy_bn", opset=min(opset, 20))
    if opset > 20:
        proto = version_converter.convert_version(proto, opset)
    result = fold_and_compare(proto)
    assert "BatchNormalization" not in ops(result.model)
    assert next(o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")) == opset
