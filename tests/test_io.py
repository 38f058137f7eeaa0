"""Loading (external data, Constant lifting, toposort) and atomic saving."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import helper

import onnxprune
from onnxprune.errors import InvalidModelError
from onnxprune.graph import to_graph, to_model
from onnxprune.io import read_model, save_model
from onnxprune.normalize import lift_constants, normalize, toposort
from onnxprune.verify import InputSpec, Reference
from tests.graphs import conv_bn, init, model, rand


def test_external_data_round_trip(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save_model(conv_bn(cin=16, cout=32), src, save_as_external_data=True, location="ext.weights",
                    size_threshold=0)
    m = onnxprune.load(src)
    assert all(t.HasField("raw_data") or t.float_data for t in m.graph.initializer)
    out = tmp_path / "out" / "folded.onnx"
    out.parent.mkdir()
    onnxprune.save(onnxprune.fold(m).model, out, source=src, external_data=True)
    assert (out.parent / "folded.onnx.data").is_file()
    again = read_model(out)
    assert [t.name for t in again.graph.initializer]
    assert sorted(p.name for p in out.parent.iterdir()) == ["folded.onnx", "folded.onnx.data"]


def test_large_models_are_saved_with_external_data(tmp_path, monkeypatch):
    import onnxprune.io as io_mod

    monkeypatch.setattr(io_mod, "EXTERNAL_DATA_THRESHOLD", 100)
    save_model(conv_bn(cin=16, cout=32), tmp_path / "m.onnx")     # a weight over the 1 KB kept inline
    assert (tmp_path / "m.onnx.data").exists()
    assert read_model(tmp_path / "m.onnx").graph.initializer


def test_save_leaves_no_temp_files(tmp_path):
    save_model(conv_bn(), tmp_path / "a.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["a.onnx"]


def test_constant_nodes_are_lifted():
    m = conv_bn()
    consts = [helper.make_node("Constant", [], [t.name], value=t, name=f"k{i}") for i, t in enumerate(m.graph.initializer)]
    consts.append(helper.make_node("Constant", [], ["scalar"], value_float=2.0))
    consts.append(helper.make_node("Constant", [], ["ints"], value_ints=[1, 2]))
    del m.graph.initializer[:]
    nodes = consts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    n = lift_constants(m.graph)
    assert n == 8
    assert [x.op_type for x in m.graph.node] == ["Conv", "BatchNormalization"]
    values = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    assert values["scalar"] == np.float32(2.0) and list(values["ints"]) == [1, 2]


def test_toposort_restores_order_and_keeps_outputs_equal():
    m = conv_bn()
    ref = Reference.of(normalize(m), InputSpec(batch=2))
    nodes = list(m.graph.node)
    random.Random(1).shuffle(nodes)
    nodes.reverse()
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    toposort(m.graph)
    assert [n.op_type for n in m.graph.node] == ["Conv", "BatchNormalization"]
    assert ref.compare(normalize(m)).max_abs_diff == 0.0


def test_stale_shapes_are_cleared_after_a_shape_change():
    """Shrink a conv's output channels: re-inference must produce the new shape, not keep the old value_info."""
    inits = [init("w", rand(6, 4, 3, 3)), init("w2", rand(2, 6, 1, 1))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2")]
    m = normalize(model(nodes, [("x", ["N", 4, 8, 8])], ["y"], inits))
    g = to_graph(m)
    conv, conv2 = g.nodes[0], g.nodes[2]
    conv.inputs[1].values = conv.inputs[1].values[:3]
    conv2.inputs[1].values = conv2.inputs[1].values[:, :3]
    out = to_model(g, m, reinfer=True)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in out.graph.value_info}
    assert shapes["r"] == ["N", 3, 8, 8]
    onnx.checker.check_model(out, full_check=True)


def test_normalize_rejects_bn_with_wrong_parameter_size():
    m = conv_bn()
    bad = next(t for t in m.graph.initializer if t.name == "bn_mean")
    bad.CopyFrom(init("bn_mean", rand(5)))
    with pytest.raises(InvalidModelError, match="bn_mean"):
        normalize(m)
