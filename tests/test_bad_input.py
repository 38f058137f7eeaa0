"""Every kind of bad input gets a one-line error, its documented exit code, no traceback, the input untouched
and no output written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune.cli.main import main
from onnxprune.errors import (ExternalDataError, InputFileError, InvalidModelError, OutputPathError,
                              UnsupportedModelError, UsageError)
from tests.graphs import conv_bn, init, model, rand


def good_model(tmp_path: Path) -> Path:
    p = tmp_path / "good.onnx"
    onnx.save(conv_bn(), p)
    return p


def make_bad(kind: str, tmp_path: Path) -> Path:
    p = tmp_path / f"{kind}.onnx"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random_bytes":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = good_model(tmp_path).read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        p.write_text("this is not a model\nbut some notes\n")
    elif kind == "directory":
        p.mkdir()
    elif kind == "missing":
        pass
    elif kind == "missing_external_data":
        onnx.save_model(conv_bn(), p, save_as_external_data=True, location="weights.bin", size_threshold=0)
        (tmp_path / "weights.bin").unlink()
    elif kind == "unsupported_opset":
        m = conv_bn(opset=9)
        onnx.save(m, p)
    elif kind == "cycle":
        nodes = [helper.make_node("Relu", ["b"], ["a"], name="r1"), helper.make_node("Add", ["x", "a"], ["b"], name="add"),
                 helper.make_node("Relu", ["b"], ["y"], name="r2")]
        m = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 4])],
                                                [helper.make_tensor_value_info("y", 1, [1, 4])]),
                              opset_imports=[helper.make_opsetid("", 17)])
        p.write_bytes(m.SerializeToString())
    elif kind == "wrong_weight_shape":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
        m = model(nodes, [("x", ["N", 3, 8, 8])], ["y"], [init("w", rand(4, 5, 3, 3))])
        p.write_bytes(m.SerializeToString())
    else:
        raise AssertionError(kind)
    return p


BAD_INPUTS = {
    "empty": (InputFileError, "empty"),
    "random_bytes": (InvalidModelError, "not an ONNX model"),
    "truncated": (InvalidModelError, ""),
    "text": (InvalidModelError, ""),
    "directory": (InputFileError, "directory"),
    "missing": (InputFileError, "no such file"),
    "missing_external_data": (ExternalDataError, "external data"),
    "unsupported_opset": (UnsupportedModelError, "opset 9"),
    "cycle": (InvalidModelError, "cycle"),
    "wrong_weight_shape": (InvalidModelError, "input channels"),
}


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("command", ["fold", "inspect"])
@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_one_line_error(kind, command, tmp_path, capsys):
    error_type, words = BAD_INPUTS[kind]
    bad = make_bad(kind, tmp_path)
    before = snapshot(tmp_path)
    argv = [command, str(bad)] + (["-o", str(tmp_path / "out.onnx")] if command == "fold" else [])
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == error_type.exit_code, err
    assert err.startswith("onnxprune: error:") and "\n" not in err and "Traceback" not in err
    assert words.lower() in err.lower()
    assert snapshot(tmp_path) == before, "input untouched, nothing written"


def test_output_in_missing_folder_is_created(tmp_path, capsys):
    src = good_model(tmp_path)
    assert main(["fold", str(src), "-o", str(tmp_path / "dist" / "cpu" / "out.onnx")]) == 0
    assert (tmp_path / "dist" / "cpu" / "out.onnx").is_file()
    assert main(["emit", str(src), "--target", "cpu", "-o", str(tmp_path / "dist2" / "cpu")]) == 0
    assert (tmp_path / "dist2" / "cpu" / "manifest.json").is_file()


def test_output_under_a_file_is_refused(tmp_path, capsys):
    src = good_model(tmp_path)
    before = snapshot(tmp_path)
    rc = main(["fold", str(src), "-o", str(tmp_path / "good.onnx" / "sub" / "out.onnx")])
    assert rc == OutputPathError.exit_code
    assert "is not a folder" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    src = good_model(tmp_path)
    before = snapshot(tmp_path)
    rc = main(["fold", str(src), "-o", str(tmp_path / "." / "good.onnx")])
    assert rc == OutputPathError.exit_code
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_missing_output_flag_is_a_usage_error(tmp_path, capsys):
    rc = main(["fold", str(good_model(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert rc == UsageError.exit_code and "-o/--output" in err and "\n" not in err


def test_bad_input_shape_flag(tmp_path, capsys):
    rc = main(["inspect", str(good_model(tmp_path)), "--input-shape", "x=1xAx8"])
    assert rc == UsageError.exit_code
    assert "--input-shape" in capsys.readouterr().err


def test_failed_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    """If writing fails midway, neither the output nor a temp file is left behind."""
    import onnxprune.io as io_mod

    src = good_model(tmp_path)
    before = snapshot(tmp_path)

    def broken_save(model, path, *a, **kw):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.onnx, "save_model", broken_save)
    rc = main(["fold", str(src), "-o", str(tmp_path / "out.onnx")])
    assert rc == OutputPathError.exit_code
    assert "No space left" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_console_script_reports_without_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    bad = make_bad("random_bytes", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "onnxprune", "inspect", str(bad)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == InvalidModelError.exit_code
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
