"""Training-free recovery: exact on constructed cases, and measured on the digits models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.channels import analyze
from onnxprune.cli.main import main
from onnxprune.data import Dataset, load_npz
from onnxprune.errors import UsageError
from onnxprune.normalize import normalize
from onnxprune.plan import GroupPlan, PlanOptions, PruningPlan
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.verify import InputSpec, make_session
from tests.channels.builder import G
from tests.graphs import rand

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model).run(None, {"x": x})[0]


def two_convs(first_weights: np.ndarray, first_bias: np.ndarray, relu: bool) -> onnx.ModelProto:
    g = G(cin=4, hw=6)
    c1 = g.op("Conv", ["x", g.const(first_weights), g.const(first_bias)], name="c1", pads=[1, 1, 1, 1])
    mid = g.op("Relu", [c1]) if relu else c1
    y = g.op("Conv", [mid, g.const(rand(5, 6, 1, 1)), g.const(rand(5))], name="c2")
    return normalize(g.build(y))


def plan_dropping(model: onnx.ModelProto, channel: int) -> PruningPlan:
    group = analyze(model).group("c1")
    return PruningPlan((GroupPlan("c1", group.channels, tuple(i for i in range(group.channels) if i != channel)),))


def test_bias_recovery_is_exact_for_a_constant_channel():
    """Channel 0 of c1 has zero weights: after ReLU it is the constant relu(b0); removing it and adding its
    contribution to c2's bias reproduces the original exactly."""
    w = rand(6, 4, 3, 3)
    w[0] = 0
    b = rand(6)
    b[0] = 0.8
    model = two_convs(w, b, relu=True)
    x = np.random.default_rng(1).standard_normal((16, 4, 6, 6)).astype(np.float32)
    data = Dataset({"x": x}, None)
    plan = plan_dropping(model, 0)
    plain = prune(model, plan=plan)
    fixed = prune(model, plan=plan, recover_with=Recover.BIAS, data=data)
    ref = outputs(model, x)
    assert np.abs(outputs(plain.model, x) - ref).max() > 0.1          # removing it does change the output
    assert np.abs(outputs(fixed.model, x) - ref).max() <= 1e-5 * np.abs(ref).max()
    assert fixed.report.recovery.after["rel-l2"] < 1e-5 < fixed.report.recovery.before["rel-l2"]


def test_lsq_recovery_is_exact_for_a_duplicated_filter():
    """Channel 0 duplicates channel 1 and feeds a linear 1x1 conv: the refit moves its weight onto channel 1."""
    w = rand(6, 4, 3, 3)
    w[0] = w[1]
    b = rand(6)
    b[0] = b[1]
    model = two_convs(w, b, relu=False)
    x = np.random.default_rng(2).standard_normal((32, 4, 6, 6)).astype(np.float32)
    fixed = prune(model, plan=plan_dropping(model, 0), recover_with=Recover.LSQ, data=Dataset({"x": x}, None))
    ref = outputs(model, x)
    assert np.abs(outputs(fixed.model, x) - ref).max() <= 1e-3 * np.abs(ref).max()
    assert fixed.report.recovery.layers[0]["method"] == "lsq"


# Measured at 30% MACs reduction (L1, calibrated on 128 training digits, 450 test digits):
# StudentNet 98.89 -> none 68.4 / lsq 97.8, VGG-16-BN 99.11 -> 10.0 / 98.9, ResNet-56 99.78 -> 9.6 / 99.8.
@pytest.mark.long
@pytest.mark.parametrize("name,floor", [("studentnet", 0.97), ("vgg16_bn", 0.98), ("resnet56", 0.99)])
def test_lsq_recovers_the_digits_models(name, floor):
    model = onnxprune.fold(onnxprune.load(DIGITS / f"{name}.onnx")).model
    calib = load_npz(DIGITS / "digits_calib.npz", model)
    test = load_npz(DIGITS / "digits_test.npz", model)
    spec = InputSpec({"input": (1, 3, 32, 32)})
    none = prune(model, PlanOptions(target_flops=0.7), spec=spec)
    lsq = prune(model, PlanOptions(target_flops=0.7), spec=spec, recover_with=Recover.LSQ, data=calib)

    def acc(m):
        return float((make_session(m).run(None, test.inputs)[0].argmax(1) == test.labels).mean())

    assert lsq.report.flops_after <= 0.7 * lsq.report.flops_before
    assert acc(lsq.model) >= floor > acc(none.model)


def test_recover_needs_data(tmp_path, capsys):
    src = str(DIGITS / "studentnet.onnx")
    rc = main(["prune", src, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--recover", "lsq"])
    assert rc == UsageError.exit_code and "--data" in capsys.readouterr().err
    assert not (tmp_path / "p.onnx").exists()


def _duplicate_pair_plan(model: onnx.ModelProto, group_id: str, drop: tuple[int, ...]) -> PruningPlan:
    group = analyze(model).group(group_id)
    return PruningPlan((GroupPlan(group_id, group.channels, tuple(i for i in range(group.channels) if i not in drop)),))


def _assert_lsq_exact(model: onnx.ModelProto, plan: PruningPlan, consumer: str) -> None:
    x = np.random.default_rng(3).standard_normal((32, 4, 6, 6)).astype(np.float32)
    plain = prune(model, plan=plan)
    fixed = prune(model, plan=plan, recover_with=Recover.LSQ, data=Dataset({"x": x}, None))
    ref = outputs(model, x)
    assert np.abs(outputs(plain.model, x) - ref).max() > 1e-2 * np.abs(ref).max()
    assert np.abs(outputs(fixed.model, x) - ref).max() <= 1e-3 * np.abs(ref).max()
    assert {f["node"]: f["method"] for f in fixed.report.recovery.layers}[consumer] == "lsq"


def test_lsq_refits_a_grouped_consumer_per_group():
    """c1's channels 0 and 4 duplicate 1 and 5 (one per block of the 2-group conv that reads them)."""
    w, b = rand(8, 4, 3, 3), rand(8)
    w[0], b[0], w[4], b[4] = w[1], b[1], w[5], b[5]
    g = G(cin=4, hw=6)
    c1 = g.op("Conv", ["x", g.const(w), g.const(b)], name="c1", pads=[1, 1, 1, 1])
    y = g.op("Conv", [c1, g.const(rand(6, 4, 3, 3)), g.const(rand(6))], name="grouped", pads=[1, 1, 1, 1], group=2)
    model = normalize(g.build(y))
    _assert_lsq_exact(model, _duplicate_pair_plan(model, "c1", (0, 4)), "grouped")


def test_lsq_refits_the_pointwise_conv_after_a_depthwise_one():
    """Channel 0 (c1 filter and depthwise filter) duplicates channel 1: the pointwise conv absorbs it."""
    w, b, dw = rand(6, 4, 3, 3), rand(6), rand(6, 1, 3, 3)
    w[0], b[0], dw[0] = w[1], b[1], dw[1]
    g = G(cin=4, hw=6)
    c1 = g.op("Conv", ["x", g.const(w), g.const(b)], name="c1", pads=[1, 1, 1, 1])
    d = g.op("Conv", [c1, g.const(dw), g.const(np.zeros(6, np.float32))], name="dw", pads=[1, 1, 1, 1], group=6)
    y = g.op("Conv", [d, g.const(rand(5, 6, 1, 1)), g.const(rand(5))], name="pw")
    model = normalize(g.build(y))
    _assert_lsq_exact(model, _duplicate_pair_plan(model, "c1", (0,)), "pw")


def test_lsq_refits_a_matmul_after_flatten():
    w, b = rand(6, 4, 3, 3), rand(6)
    w[0], b[0] = w[1], b[1]
    g = G(cin=4, hw=6)
    c1 = g.op("Conv", ["x", g.const(w), g.const(b)], name="c1", pads=[1, 1, 1, 1], strides=[3, 3])
    flat = g.op("Flatten", [c1], axis=1)
    y = g.op("MatMul", [flat, g.const(rand(6 * 2 * 2, 3))], name="mm")
    model = normalize(g.build(y))
    _assert_lsq_exact(model, _duplicate_pair_plan(model, "c1", (0,)), "mm")


def test_lsq_with_convtranspose_consumers():
    """The scorecard found it: a ConvTranspose whose output channels are pruned read its target on the last
    axis (an IndexError); its channels are on axis 1 as for Conv."""
    from models.zoo_cache import zoo_model

    model = onnxprune.load(zoo_model("convtranspose_decoder", "legacy_bn"))
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    result = prune(model, PlanOptions(ratio=0.3), recover_with=Recover.LSQ, data=Dataset({"input": x}, None))
    recovery = result.report.recovery
    assert result.report.groups_pruned > 0 and recovery.layers
    assert recovery.after["rel-l2"] <= recovery.before["rel-l2"] + 1e-6


def test_prune_reports_on_held_out_eval_data_and_says_which(tmp_path, capsys):
    from onnxprune.cli.main import main

    digits = Path(__file__).resolve().parents[1] / "models" / "digits"
    report = tmp_path / "r.json"
    assert main(["prune", str(digits / "resnet56.onnx"), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3",
                 "--recover", "lsq", "--data", str(digits / "digits_calib.npz"), "--limit", "64",
                 "--eval-data", str(digits / "digits_test.npz"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "of --eval-data (held out)" in out
    q = json.loads(report.read_text())["quality"]
    assert q["data"] == "eval" and q["samples"] == 64 and "accuracy" in q["recovered"]
    assert main(["prune", str(digits / "resnet56.onnx"), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.3"]) == 0
    assert "accuracy is unknown" in capsys.readouterr().err


def test_refit_with_few_rows_per_unknown_stays_near_the_layer_weights():
    """A layer with fewer calibration rows than unknowns (a late conv: many input channels, few positions):
    plain least squares fits the calibration rows exactly and generalizes badly; the held-out choice of the
    pull toward the layer's own weights generalizes. With ample rows the fit is plain least squares."""
    from onnxprune.recover import RIDGE, _ridge

    rng = np.random.default_rng(0)
    k, out = 300, 8
    prior = rng.standard_normal((k + 1, out))
    truth = prior + 0.05 * rng.standard_normal((k + 1, out))   # the refit target is close to the current weights

    def rows(n):
        a = rng.standard_normal((n, k))
        return a, np.concatenate([a, np.ones((n, 1))], 1) @ truth + 0.5 * rng.standard_normal((n, out))

    a, y = rows(200)                                          # 200 rows for 301 unknowns
    fresh_a, fresh_y = rows(2000)
    fresh = np.concatenate([fresh_a, np.ones((2000, 1))], 1)

    def error(sol):
        return float(np.linalg.norm(fresh @ sol - fresh_y) / np.linalg.norm(fresh_y))

    plain = np.linalg.lstsq(np.concatenate([a, np.ones((200, 1))], 1), y, rcond=None)[0]
    pulled = _ridge(a, y, prior=prior)
    assert error(pulled) < 0.5 * error(plain)
    many_a, many_y = rows(20000)                             # ample rows: no pull (exact fits stay exact)
    ample = _ridge(many_a, many_y, prior=np.zeros_like(prior))
    assert np.abs(ample - truth).max() < 0.1 and RIDGE < 1e-4
