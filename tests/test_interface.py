"""Declared interfaces as other exporters write them: ``-1`` / ``0`` dims, one ``?`` for height and width,
graph outputs without a type. Every command reads them, batches data for them and fixes their shapes per axis."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.cli.main import main
from onnxprune.data import load_data
from onnxprune.emission.mobile import fix_shapes
from onnxprune.interface import fix_input_shapes, repair_interface
from onnxprune.io import read_model
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.verify import InputSpec
from tests.channels.builder import G


def paddle_like(batch_dim: int = -1) -> onnx.ModelProto:
    """conv -> relu -> conv -> relu -> GAP -> flatten -> Gemm, input [-1, 3, ?, ?], output [-1, 5]."""
    g = G(cin=3)
    c = g.op("Relu", [g.conv("x", 3, 16, name="c1")])
    c = g.op("Relu", [g.conv(c, 16, 16, name="c2")])
    f = g.op("Flatten", [g.op("GlobalAveragePool", [c])])
    m = g.build(g.op("Gemm", [f, g.const(np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32))],
                     transB=1, name="fc"))
    for vi in (*m.graph.input, *m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        while len(dims) < (4 if vi in m.graph.input else 2):
            dims.add()
        for axis, d in enumerate(dims):
            if axis == 0:
                d.dim_value = batch_dim
            elif vi.name == "x" and axis >= 2:
                d.dim_param = "?"
    del m.graph.value_info[:]
    return m


def dims(vi: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("batch_dim", [-1, 0])
def test_negative_and_zero_dims_become_names_of_their_own(batch_dim):
    m = paddle_like(batch_dim)
    notes = repair_interface(m)
    assert dims(m.graph.input[0]) == ["x_dim0", 3, "x_dim2", "x_dim3"]
    assert dims(m.graph.output[0])[0] == f"{m.graph.output[0].name}_dim0"
    assert len(notes) == 2 and "renamed" in notes[0]


def test_named_dims_shared_on_purpose_are_kept():
    g = G(cin=3)
    m = g.build(g.conv("x", 3, 4))  # input [N, 3, 8, 8]
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert repair_interface(m) == []
    assert dims(m.graph.input[0])[0] == "N"


def test_untyped_output_is_typed_and_the_file_loads(tmp_path):
    m = paddle_like()
    m.graph.output[0].ClearField("type")
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    notes: list[str] = []
    loaded = onnxprune.load(path, notes)
    assert any("had no type" in n for n in notes)
    assert loaded.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.checker.check_model(loaded, full_check=True)


def test_cli_says_what_it_repaired(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(paddle_like(), path)
    assert main(["inspect", str(path), "--input-shape", "x=1x3x48x192"]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "'x': dynamic dim(s) axis 0 (-1), axis 2 ('?'), axis 3 ('?') renamed" in err


def test_fix_shapes_per_axis_not_per_name():
    """``?`` names both height and width: 48x192 must not become 48x48 (nor fail as ORT's tool does)."""
    m = paddle_like()
    fixed = fix_input_shapes(m, {"x": (1, 3, 48, 192)})
    assert dims(fixed.graph.input[0]) == [1, 3, 48, 192]
    mobile = fix_shapes(m, {"x": (1, 3, 48, 192)})
    assert dims(mobile.graph.input[0]) == [1, 3, 48, 192] and dims(mobile.graph.output[0]) == [1, 5]


def test_data_driven_commands_on_minus_one_batch(tmp_path):
    """``-1`` was read as a fixed batch of -1: every data-driven step batched nothing."""
    path = tmp_path / "m.onnx"
    onnx.save(paddle_like(), path)
    model = onnxprune.load(path)
    x = np.random.default_rng(0).standard_normal((24, 3, 16, 20)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    data = load_data(tmp_path / "calib.npz", model)
    assert data.fixed_batch is None and len(list(data.batches(8))) == 3
    result = prune(model, PlanOptions(ratio=0.5, round_to=1), spec=InputSpec({"x": (2, 3, 16, 20)}),
                   recover_with=Recover.LSQ, data=data, verify=True)
    assert result.report.recovery.after["rel-l2"] < result.report.recovery.before["rel-l2"]
    out = tmp_path / "o.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--recover", "lsq", "--data",
                 str(tmp_path / "calib.npz"), "--input-shape", "x=1x3x16x20"]) == 0
    assert main(["sensitivity", str(path), "-o", str(tmp_path / "sens"), "--data", str(tmp_path / "calib.npz"),
                 "--input-shape", "x=1x3x16x20", "--ratios", "0.5"]) == 0
    assert main(["compress", str(path), "-o", str(tmp_path / "c.onnxz"), "--sparsity", "0.5", "--data",
                 str(tmp_path / "calib.npz")]) == 0


def test_emit_mobile_on_shared_question_mark_dims(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(paddle_like(), path)
    assert main(["emit", str(path), "--target", "mobile", "-o", str(tmp_path / "mobile"),
                 "--input-shape", "x=1x3x48x192"]) == 0
    fixed = read_model(tmp_path / "mobile" / "model.onnx")
    assert dims(fixed.graph.input[0]) == [1, 3, 48, 192]
