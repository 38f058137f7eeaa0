"""Accuracy-driven int8 (`emit --int8 --max-drop`): the node known to be sensitive, and only it, stays float."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main
from onnxprune.emission.int8_search import default_float_nodes


def sensitive_model(tmp_path):
    """conv1 writes one channel 1000x larger than the rest; conv2 reads it at weight 1e-3. Quantizing the tensor
    between them (one uint8 range for all channels) wipes out the small channels: conv2 is the sensitive node."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 4, 3, 3)).astype(np.float32) * 0.3
    w1[0] *= 1000.0
    w2 = rng.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.3
    w2[:, 0] *= 1e-3
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (w2, "w2"), (rng.normal(size=(10, 8)).astype(
        np.float32), "wf"), (np.zeros(10, np.float32), "bf")]]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["output"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    x = rng.normal(size=(600, 4, 8, 8)).astype(np.float32)
    labels = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})[0].argmax(1)   # float = 100%
    np.savez(tmp_path / "calib.npz", input=x[:200], labels=labels[:200])
    np.savez(tmp_path / "eval.npz", input=x[200:], labels=labels[200:])
    return tmp_path / "m.onnx"


def test_only_the_sensitive_node_stays_float(tmp_path):
    model = sensitive_model(tmp_path)
    common = ["emit", str(model), "--target", "cpu", "--int8", "--data", str(tmp_path / "calib.npz"), "--eval-data",
              str(tmp_path / "eval.npz"), "-q"]
    assert main([*common, "-o", str(tmp_path / "one_shot")]) == 0
    assert main([*common, "-o", str(tmp_path / "driven"), "--max-drop", "1"]) == 0
    one_shot = json.loads((tmp_path / "one_shot" / "manifest.json").read_text())
    driven = json.loads((tmp_path / "driven" / "manifest.json").read_text())
    assert [f["name"] for f in one_shot["int8"]["kept_float"]] == ["fc"]        # the classifier, by default
    accuracy = next(a["accuracy"] for f in one_shot["files"] if f["name"] == "model.int8.onnx"
                    for a in f["agreement"] if a["accuracy"] is not None)
    assert accuracy < 0.95                                                       # one shot loses > 5 points
    search = driven["int8"]
    assert [f["name"] for f in search["kept_float"]] == ["fc", "conv2"]
    assert "adds relative error" in search["kept_float"][1]["reason"]
    assert search["within_budget"] and search["drop_points"] <= 1 and search["metric"] == "accuracy"
    int8 = onnx.load(tmp_path / "driven" / "model.int8.onnx")
    conv = {n.name: n for n in int8.graph.node}
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    assert producers[conv["conv2"].input[0]] == "Relu"                           # reads float, not a Dequantize
    assert producers[conv["conv1"].input[0]] == "DequantizeLinear"               # conv1 is still int8


@pytest.mark.parametrize("argv,words", [
    (["--int8", "dynamic", "--max-drop", "1"], "--max-drop is for --int8 static"),
    (["--int8", "--max-drop", "1", "--calibration", "random"], "needs data"),
    (["--int8", "--max-drop", "-2", "--data", "CALIB"], "expected points >= 0"),
    (["--int8", "--max-drop", "1", "--data", "CALIB", "--metric", "nope:"], "--metric"),
])
def test_bad_max_drop_requests(argv, words, tmp_path, capsys):
    model = sensitive_model(tmp_path)
    argv = [str(tmp_path / "calib.npz") if a == "CALIB" else a for a in argv]
    assert main(["emit", str(model), "--target", "cpu", "-o", str(tmp_path / "o"), *argv, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "o").exists()


def test_default_float_nodes_of_an_attention_block():
    """LayerNormalization, Softmax, the two activation MatMuls and the classifier stay float; the projections
    (MatMul by a constant) are quantized."""
    rng = np.random.default_rng(0)
    w = {n: numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), n) for n in ("wq", "wk", "wv", "wo")}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], name="ln", axis=-1),
             *[helper.make_node("MatMul", ["n", f"w{k}"], [k], name=f"proj_{k}") for k in "qkv"],
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
             helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["c"], name="context"),
             helper.make_node("MatMul", ["c", "wo"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 8])],
                              [*w.values(), numpy_helper.from_array(np.ones(8, np.float32), "g"),
                               numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    names = {f.name for f in default_float_nodes(helper.make_model(graph))}
    assert names == {"ln", "scores", "softmax", "context", "head"}


def test_calibration_method_auto_and_symmetric_activations(tmp_path):
    model = sensitive_model(tmp_path)
    assert main(["emit", str(model), "--target", "cpu", "--int8", "--data", str(tmp_path / "calib.npz"),
                 "--eval-data", str(tmp_path / "eval.npz"), "--calibration-method", "auto",
                 "--symmetric-activations", "-o", str(tmp_path / "out"), "-q"]) == 0
    int8 = json.loads((tmp_path / "out" / "manifest.json").read_text())["int8"]
    assert set(int8["calibration_tried"]) == {"minmax", "entropy", "percentile"}
    assert int8["calibration"] == max(int8["calibration_tried"], key=int8["calibration_tried"].get)
    model8 = onnx.load(tmp_path / "out" / "model.int8.onnx")
    inits = {t.name: t for t in model8.graph.initializer}
    activation_zero_points = [inits[n.input[2]] for n in model8.graph.node
                              if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert activation_zero_points and all(z.data_type == TensorProto.INT8 for z in activation_zero_points)
    assert all(not numpy_helper.to_array(z).any() for z in activation_zero_points)
