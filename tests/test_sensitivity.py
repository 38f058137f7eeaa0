"""Sensitivity analysis: curves, derived plans (tolerance, MAC target), `prune --sensitivity`, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnxprune
from onnxprune.cli.main import main
from onnxprune.data import load_npz
from onnxprune.metrics import Metric, loss, metrics
from onnxprune.sensitivity_analysis import run_sensitivity, target_plan, tolerance_plan
from onnxprune.verify import InputSpec

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


@pytest.fixture(scope="module")
def studentnet():
    model = onnxprune.load(DIGITS / "studentnet.onnx")
    return model, load_npz(DIGITS / "digits_calib.npz", model).limit(64)


def test_metrics_of_identical_and_different_outputs():
    ref = np.random.default_rng(0).standard_normal((20, 10))
    same = metrics(ref, ref, labels=ref.argmax(1))
    assert same["agreement"] == 1.0 and same["accuracy"] == 1.0 and same["rel-l2"] == 0.0
    assert same["kl"] == pytest.approx(0.0, abs=1e-9) and same["cosine"] == pytest.approx(1.0)
    worse = metrics(ref, -ref, labels=ref.argmax(1))
    assert loss(Metric.AGREEMENT, same, worse) > 0.5 and loss(Metric.REL_L2, same, worse) > 1.0


def test_curves_and_plans(studentnet):
    model, data = studentnet
    spec = InputSpec({"input": (1, 3, 32, 32)})
    result = run_sensitivity(model, data, ratios=(0.25, 0.5, 0.75), spec=spec, jobs=2)
    groups = {p.group for p in result.points}
    assert len(groups) == 8 and len(result.points) == 24
    assert all(p.macs_kept < 1.0 for p in result.points)
    # more pruning of one group never keeps more channels
    for g in groups:
        kept = [p.channels_kept for p in sorted(result.curve(g), key=lambda p: p.ratio)]
        assert kept == sorted(kept, reverse=True)
    strict = tolerance_plan(model, result, tolerance=0.0)
    loose = tolerance_plan(model, result, tolerance=1.0)
    assert sum(g.removed for g in strict.groups) <= sum(g.removed for g in loose.groups)
    assert all(g.removed == round(0.75 * g.channels) for g in loose.groups)
    target = target_plan(model, result, 0.8, spec)
    pruned = onnxprune.pruning.prune(model, plan=target, spec=spec)
    assert pruned.report.flops_after <= 0.8 * pruned.report.flops_before


def test_cli_sensitivity_then_prune(tmp_path, capsys):
    out = tmp_path / "sens"
    assert main(["sensitivity", str(DIGITS / "studentnet.onnx"), "--data", str(DIGITS / "digits_calib.npz"),
                 "-o", str(out), "--ratios", "0.3,0.6", "--target-flops", "0.8", "--limit", "32",
                 "--input-shape", "input=1x3x32x32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".onnxprune", "plan_target.json", "plan_tolerance.json", "sensitivity.csv",
                                                      "sensitivity.json", "sensitivity.md", "sensitivity.png"]
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["metric"] == "accuracy" and len(data["points"]) == 16
    assert [s["stage"] for s in data["stages"]][0] == "loading the model and data"
    assert any(s["stage"].startswith("sensitivity: 2 ratios") for s in data["stages"])
    assert data["stages"][-1]["stage"] == "deriving plans" and all(s["seconds"] >= 0 for s in data["stages"])
    assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "p.onnx"), "--sensitivity", str(out),
                 "--input-shape", "input=1x3x32x32", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["flops_after"] <= 0.8 * report["flops_before"]
