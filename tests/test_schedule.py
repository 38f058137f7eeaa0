"""Schedules: same channel counts as one-shot, different (re-scored) choices, layerwise order by sensitivity;
data-driven criteria."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.channels import analyze
from onnxprune.cli.main import main
from onnxprune.data import Dataset, load_data
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion, score_groups
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.schedule import Schedule, ScheduleOptions
from onnxprune.verify import make_session
from tests.channels.builder import G

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


def chain(seed: int = 0) -> onnx.ModelProto:
    """conv-relu x3 -> global pool -> Gemm: three prunable groups in a chain (each refit changes the next's
    producer)."""
    rng = np.random.default_rng(seed)
    g = G(cin=3, hw=8)
    x = "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 8), (8, 8)]):
        w, b = rng.standard_normal((cout, cin, 3, 3)), rng.standard_normal(cout)
        conv = g.op("Conv", [x, g.const(w.astype(np.float32)), g.const(b.astype(np.float32))], name=f"c{i}",
                    pads=[1, 1, 1, 1])
        x = g.op("Relu", [conv])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    y = g.op("Gemm", [x, g.const(rng.standard_normal((4, 8)).astype(np.float32))], transB=1)
    return normalize(g.build(y))


@pytest.fixture(scope="module")
def data() -> Dataset:
    x = np.random.default_rng(0).standard_normal((48, 3, 8, 8)).astype(np.float32)
    return Dataset({"x": x}, np.arange(48) % 4)


def kept(result) -> dict[str, tuple[int, ...]]:
    return {g.id: g.keep for g in result.plan.groups}


@pytest.mark.parametrize("criterion", [Criterion.L1, Criterion.ACTIVATION])
def test_schedules_keep_the_counts_and_macs_of_oneshot(data, criterion):
    model = chain()
    options = PlanOptions(ratio=0.5, criterion=criterion)
    results = {s: prune(model, options, recover_with=Recover.LSQ, data=data,
                        schedule=ScheduleOptions(s, steps=3)) for s in Schedule}
    counts = {s: {g: len(k) for g, k in kept(r).items()} for s, r in results.items()}
    assert counts[Schedule.ITERATIVE] == counts[Schedule.LAYERWISE] == counts[Schedule.ONESHOT]
    assert len({r.report.flops_after for r in results.values()}) == 1
    assert results[Schedule.ITERATIVE].report.schedule.rounds == 3
    order = results[Schedule.LAYERWISE].report.schedule.order
    assert sorted(g for g, _ in order) == ["c0", "c1", "c2"]
    assert [loss for _, loss in order] == sorted(loss for _, loss in order)
    assert results[Schedule.ONESHOT].report.schedule is None
    for r in results.values():  # every result is a valid model that runs, with metrics before and after
        onnx.checker.check_model(r.model, full_check=True)
        q = r.report.quality
        assert q.metric == "accuracy" and q.stages() == ("original", "pruned", "recovered")


@pytest.mark.parametrize("criterion,recover", [(Criterion.ACTIVATION, Recover.NONE), (Criterion.L1, Recover.LSQ)])
def test_layerwise_rescoring_changes_the_choice(data, criterion, recover):
    """Later rounds score the pruned (and recovered) model: activations change when upstream channels go, and
    the lsq refit of a consumer changes the filters that score the next group. Same counts, other channels."""
    options = PlanOptions(ratio=0.5, criterion=criterion)
    differs = []
    for seed in range(4):  # a no-op re-scoring would never differ
        model = chain(seed)
        one = prune(model, options, recover_with=recover, data=data)
        layer = prune(model, options, recover_with=recover, data=data, schedule=ScheduleOptions(Schedule.LAYERWISE))
        assert {g: len(k) for g, k in kept(one).items()} == {g: len(k) for g, k in kept(layer).items()}
        differs.append(kept(one) != kept(layer))
    assert any(differs)


def test_layerwise_needs_data_and_steps_must_be_positive():
    with pytest.raises(UsageError, match="`data`"):
        prune(chain(), PlanOptions(ratio=0.3), schedule=ScheduleOptions(Schedule.LAYERWISE))
    with pytest.raises(UsageError, match="`steps`"):
        ScheduleOptions(Schedule.ITERATIVE, steps=0)


def test_data_driven_criteria(data):
    """activation ranks a channel that is always zero after ReLU last; apoz ranks channels by how often they
    are non-zero."""
    model = chain()
    init = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.name == "c0")
    w = onnx.numpy_helper.to_array(init[conv.input[1]]).copy()
    b = onnx.numpy_helper.to_array(init[conv.input[2]]).copy()
    w[3], b[3] = 0.0, -1.0        # channel 3: relu(-1) = 0 everywhere
    w[5], b[5] = 0.0, 2.0         # channel 5: constant 2, never zero
    init[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, conv.input[1]))
    init[conv.input[2]].CopyFrom(onnx.numpy_helper.from_array(b, conv.input[2]))
    analysis = analyze(model)
    act = score_groups(analysis, Criterion.ACTIVATION, data=data, model=model)["c0"]
    apoz = score_groups(analysis, Criterion.APOZ, data=data, model=model)["c0"]
    assert act.argmin() == 3 and apoz.argmin() == 3
    assert apoz[5] >= apoz.max() - 1e-3  # never zero: the highest non-zero fraction
    x = make_session(model).run(None, data.inputs)  # the model itself is unchanged by scoring
    assert x[0].shape == (48, 4)
    with pytest.raises(UsageError, match="needs calibration data"):
        score_groups(analysis, Criterion.APOZ)


def test_iterative_lsq_on_digits_studentnet():
    """On the digits StudentNet at 50% MACs with lsq, iterative keeps accuracy within 2 points of one-shot."""
    model = onnxprune.fold(onnxprune.load(DIGITS / "studentnet.onnx")).model
    calib = load_data(DIGITS / "digits_calib.npz", model)
    test = load_data(DIGITS / "digits_test.npz", model)
    options = PlanOptions(target_flops=0.5)

    def acc(m):
        return float((make_session(m).run(None, test.inputs)[0].argmax(1) == test.labels).mean())

    one = prune(model, options, recover_with=Recover.LSQ, data=calib)
    it = prune(model, options, recover_with=Recover.LSQ, data=calib, schedule=ScheduleOptions(Schedule.ITERATIVE, 2))
    assert it.report.flops_after == one.report.flops_after <= 0.5 * one.report.flops_before
    assert acc(it.model) >= acc(one.model) - 0.02 and acc(it.model) > 0.85


def test_prune_cli_schedule_and_metric(tmp_path, capsys):
    src = str(DIGITS / "studentnet.onnx")
    out = tmp_path / "p.onnx"
    rc = main(["prune", src, "-o", str(out), "--target-flops", "0.7", "--schedule", "layerwise", "--recover", "lsq",
               "--data", str(DIGITS / "digits_calib.npz"), "--metric", "kl", "--limit", "64"])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists()
    assert "schedule layerwise" in text and "kl " in text and "on 64 samples" in text
