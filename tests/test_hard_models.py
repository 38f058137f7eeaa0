"""The committed hard benchmark models: they load, match the accuracy their training recorded on the test split,
and do not saturate (so accuracy figures measured on them can move)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxprune.cli.main import main
from onnxprune.metrics import sequence_metrics

HARD = Path(__file__).resolve().parents[1] / "models" / "hard"


def test_results_are_reproduced_and_do_not_saturate():
    results = json.loads((HARD / "results.json").read_text())
    for name in ("glyphs", "textline"):
        data = np.load(HARD / f"{name}_test.npz")
        assert data["input"].dtype == np.float16 and len(data["input"]) == results[name]["test_samples"]
        sess = ort.InferenceSession(str(HARD / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        out = np.concatenate([sess.run(None, {"input": data["input"][i:i + 200].astype(np.float32)})[0]
                              for i in range(0, len(data["input"]), 200)])
        if name == "glyphs":
            measured = {"accuracy": float((out.argmax(1) == data["labels"]).mean())}
        else:
            m = sequence_metrics(out, out, data["labels"])
            measured = {"line_accuracy": m["line-accuracy"], "cer": m["cer"]}
        for key, value in measured.items():
            assert value == pytest.approx(results[name]["test"][key], abs=2e-3), (name, key)
        headline = measured.get("accuracy", measured.get("line_accuracy"))
        assert 0.5 < headline < 0.97, (name, headline)     # a task that does not saturate
        assert results[name]["params"] >= 1_000_000


@pytest.mark.parametrize("name", ["glyphs", "textline"])
def test_inspect_reads_them(name, capsys):
    assert main(["inspect", str(HARD / f"{name}.onnx"), "-q"]) == 0
    assert "prunable" in capsys.readouterr().out


def test_emit_reports_line_metrics_of_the_recognizer(tmp_path):
    """A CTC output on data: the manifest gives line accuracy, CER and line agreement for source and artifact."""
    assert main(["emit", str(HARD / "textline.onnx"), "--target", "cpu", "-o", str(tmp_path / "out"),
                 "--eval-data", str(HARD / "textline_test.npz"), "-q"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    on_data = next(a for a in manifest["files"][0]["agreement"] if a["metrics"] is not None)
    assert set(on_data["metrics"]) == {"line-agreement", "line-accuracy", "cer"}
    assert on_data["metrics"]["line-accuracy"] == pytest.approx(on_data["source_metrics"]["line-accuracy"])
    assert on_data["metrics"]["line-agreement"] == 1.0


def test_recognizer_recovery_refits_the_linear_biases_and_the_output_layer(tmp_path):
    """lsq on the recognizer: the Linear layers reading pruned channels are refit with their bias Add, and the
    classifier (no pruned input, after LayerNorm and attention) is refit last against the original's logits."""
    from onnxprune.recover import output_layers

    report = tmp_path / "r.json"
    assert main(["prune", str(HARD / "textline.onnx"), "-o", str(tmp_path / "p.onnx"), "--target-flops", "0.7",
                 "--round-to", "8", "--recover", "lsq", "--data", str(HARD / "textline_calib.npz"), "--limit", "128",
                 "--input-shape", "input=1x1x32x128", "--report", str(report), "-q"]) == 0
    layers = {f["node"]: f for f in json.loads(report.read_text())["recovery"]["layers"]}
    assert layers["/fc/MatMul"]["method"] == "lsq (output layer)"
    assert layers["/proj/MatMul"]["method"] == "lsq"
    assert all(f["error_after"] < f["error_before"] for f in layers.values())
    import onnxprune

    assert [n.name for n in output_layers(onnxprune.load(HARD / "textline.onnx"))] == ["/fc/MatMul"]
