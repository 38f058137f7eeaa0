"""Sequence (CTC) metrics and user metric plugins."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.metrics import (
    Metric,
    UserMetric,
    check_metric,
    ctc_greedy,
    default_metric,
    loss,
    metric_scope,
    metrics,
    parse_metric,
    sequence_metrics,
)


def one_hot_steps(paths: list[list[int]], classes: int = 5) -> np.ndarray:
    out = np.zeros((len(paths), len(paths[0]), classes), np.float32)
    for i, path in enumerate(paths):
        out[i, np.arange(len(path)), path] = 1.0
    return out


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    logits = one_hot_steps([[1, 1, 0, 1, 2, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 4, 0, 4, 4]])
    assert ctc_greedy(logits) == [(1, 1, 2), (), (3, 3, 4, 4)]


def test_line_accuracy_cer_and_agreement():
    reference = one_hot_steps([[1, 0, 2, 0], [3, 3, 0, 4], [1, 0, 0, 0]])
    got = one_hot_steps([[1, 0, 2, 0], [3, 0, 0, 4], [2, 0, 0, 0]])
    labels = np.array([[1, 2, -1], [3, 4, -1], [1, -1, -1]])
    m = sequence_metrics(reference, got, labels)
    assert m["line-agreement"] == pytest.approx(2 / 3)     # third line decodes differently
    assert m["line-accuracy"] == pytest.approx(2 / 3)
    assert m["cer"] == pytest.approx(1 / 5)                # one substitution over 5 label characters
    assert loss(Metric.CER, {"cer": 0.1}, {"cer": 0.3}) == pytest.approx(0.2)   # lower is better
    all_metrics = metrics(reference, got, labels)
    assert {"line-accuracy", "cer", "line-agreement", "rel-l2", "cosine"} <= set(all_metrics)
    assert "accuracy" not in all_metrics


def test_defaults_and_checks_for_sequences():
    x = {"input": np.zeros((3, 1), np.float32)}
    reference = np.zeros((3, 4, 5), np.float32)
    assert default_metric(Dataset(x, np.zeros((3, 2), np.int64)), reference) is Metric.LINE_ACCURACY
    assert default_metric(Dataset(x, None), reference) is Metric.LINE_AGREEMENT
    with pytest.raises(UsageError, match="label rows"):
        check_metric(Metric.CER, Dataset(x, None), reference)
    with pytest.raises(UsageError, match="3-D"):
        check_metric(Metric.LINE_AGREEMENT, Dataset(x, None), np.zeros((3, 5), np.float32))


def test_user_metric_from_a_file(tmp_path):
    plugin = tmp_path / "my_metric.py"
    plugin.write_text("import numpy as np\n\ndef top2(outputs, labels):\n"
                      "    best = np.argsort(outputs, axis=1)[:, -2:]\n"
                      "    return float(np.mean([l in b for l, b in zip(labels, best)]))\n")
    reference = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]], np.float32)
    with metric_scope():
        metric = parse_metric(f"{plugin}:top2")
        assert isinstance(metric, UserMetric)
        m = metrics(reference, reference, np.array([2, 1]))
        assert m[metric.value] == 1.0 and m["accuracy"] == 0.0
    assert metric.value not in metrics(reference, reference, None)     # scoped: it does not leak to later work


@pytest.mark.parametrize("text,words", [("nope", "expected one of"), ("no_such_module_xyz:f", "cannot import"),
                                        ("os:sep", "not callable"), ("json:loads", None)])
def test_bad_user_metrics(text, words):
    if words is None:
        with metric_scope():
            parse_metric(text)               # importable and callable: fails when called, as the user's error
            with pytest.raises(UsageError, match="failed"):
                metrics(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), None)
        return
    with pytest.raises(UsageError, match=words):
        parse_metric(text)


def test_cli_metric_plugin_reported_by_prune(tmp_path, capsys):
    import json
    from pathlib import Path

    from onnxprune import metrics as module
    from onnxprune.cli.main import main

    digits = Path(__file__).resolve().parents[1] / "models" / "digits"
    plugin = tmp_path / "m.py"
    plugin.write_text("def margin(outputs, labels):\n    import numpy as np\n"
                      "    s = np.sort(outputs, axis=1)\n    return float((s[:, -1] - s[:, -2]).mean())\n")
    assert main(["prune", str(digits / "studentnet.onnx"), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.2",
                 "--data", str(digits / "digits_calib.npz"), "--limit", "64", "--metric", f"{plugin}:margin",
                 "--input-shape", "input=1x3x32x32", "--report", str(tmp_path / "r.json"), "-q"]) == 0
    assert f"{plugin}:margin" not in module.metrics(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), None)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["metric"] == f"{plugin}:margin"
    assert report["quality"]["original"][f"{plugin}:margin"] > report["quality"]["pruned"][f"{plugin}:margin"] >= 0
    assert onnx.load(tmp_path / "p.onnx").graph.node
