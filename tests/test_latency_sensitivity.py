"""``--allocate sensitivity``: a latency budget shared among groups by the loss measured at each group's steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from onnxprune.cli.main import main
from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.latency.planner import Steps, plan_global
from onnxprune.latency.sensitivity import StepLosses, measured_counts, step_loss
from onnxprune.metrics import Metric
from onnxprune.plan import Allocate, PlanOptions, block_multiple, make_plan
from onnxprune.pruning import prune
from tests.test_latency import chain, setup, synthetic_table  # noqa: F401  (setup: a fixture)


def test_losses_are_interpolated_on_a_monotone_curve():
    losses = StepLosses("accuracy", 10, {"g": ((16, 0.5), (32, 0.1), (48, 0.3), (64, 0.0))})
    # 32 measured less than 48 (noise): a count never loses less than a larger one
    assert losses.loss("g", 32) == pytest.approx(0.3)
    assert losses.loss("g", 48) == pytest.approx(0.3)
    assert losses.loss("g", 56) == pytest.approx(0.15)
    assert losses.loss("g", 16) == pytest.approx(0.5) and losses.loss("g", 64) == 0.0
    assert losses.loss("never measured", 8) == 0.0
    assert json.loads(json.dumps(losses.to_json()))["curves"]["g"][0] == {"kept": 16, "loss": 0.5}


def test_at_most_max_points_steps_are_measured_the_smallest_always_the_full_count_never():
    assert measured_counts((8, 16, 24)) == (8, 16)
    many = tuple(range(16, 16 * 21, 16))   # 20 steps, the full count last
    picked = measured_counts(many, 8)
    assert len(picked) == 8 and picked[0] == 16 and many[-1] not in picked
    assert list(picked) == sorted(set(picked))


def test_loss_is_log_retention_where_higher_is_better_and_a_difference_otherwise():
    assert step_loss(Metric.ACCURACY, {"accuracy": 0.8}, {"accuracy": 0.4}) == pytest.approx(math.log(2))
    # a broken model costs a bounded but large loss (the value is floored at a thousandth of the original)
    assert step_loss(Metric.ACCURACY, {"accuracy": 0.8}, {"accuracy": 0.0}) == pytest.approx(math.log(1000))
    assert step_loss(Metric.ACCURACY, {"accuracy": 0.8}, {"accuracy": 0.9}) < 0
    assert step_loss(Metric.CER, {"cer": 0.05}, {"cer": 0.15}) == pytest.approx(0.10)
    assert step_loss(Metric.COSINE, {"cosine": 0.0}, {"cosine": -0.5}) == pytest.approx(0.5)


def test_the_budget_goes_where_the_measured_loss_is_least(setup):  # noqa: F811
    _, analysis, scores, latency = setup
    groups = analysis.prunable
    steps = Steps.of(latency, groups, block_multiple, 1)
    budget = 0.7 * latency.full_ms   # reachable by stepping either group alone

    def costly(gid: str) -> StepLosses:
        return StepLosses("accuracy", 100, {g.id: ((16, 2.0 if g.id == gid else 0.0), (32, 1.0 if g.id == gid else 0.0),
                                                   (64, 0.0)) for g in groups})

    by_id = {g.id: g for g in groups}
    for fragile, other in ((groups[0], groups[1]), (groups[1], groups[0])):
        kept = plan_global(latency, groups, steps, budget, scores, None, costly(fragile.id))
        assert kept[fragile.id] == fragile.channels and kept[other.id] < other.channels
        assert latency.predict(latency.removed_for(kept, by_id)) <= budget + 1e-9
    # losses that measured nothing leave the weights to decide: the same plan as without them
    flat = StepLosses("accuracy", 100, {g.id: ((16, 0.0), (64, 0.0)) for g in groups})
    assert plan_global(latency, groups, steps, budget, scores, None, flat) == \
        plan_global(latency, groups, steps, budget, scores, None)
    # make_plan takes the greedy from the whole model with losses, on steps only
    options = PlanOptions(target_latency=0.7, allocate=Allocate.SENSITIVITY)
    plan = make_plan(analysis, scores, options, latency=latency, losses=costly(groups[0].id))
    assert len(plan.groups[0].keep) == groups[0].channels
    assert all(len(gp.keep) in latency.steps(by_id[gp.id]) for gp in plan.groups)


def _data(n: int = 24) -> Dataset:
    return Dataset({"x": np.random.default_rng(0).standard_normal((n, 1, 3, 16, 16)).astype(np.float32)[:, 0]},
                   None, fixed_batch=1)


def test_prune_measures_each_group_at_its_steps_and_reports_the_curves():
    result = prune(chain(), PlanOptions(target_latency=0.7, allocate=Allocate.SENSITIVITY),
                   latency=synthetic_table(), data=_data())
    lat = result.report.latency
    assert lat.losses is not None and lat.losses.metric == "cosine" and lat.losses.samples == 24
    for g in lat.groups:
        curve = lat.losses.curves[g.group]
        assert curve[-1] == (g.channels, 0.0)
        assert [k for k, _ in curve[:-1]] == list(g.steps[:-1])   # every step below the full count measured
        assert all(v >= 0 for _, v in curve) and g.kept in g.steps
    assert curve[0][1] > 0   # 16 of 64 channels changes the output
    assert json.loads(json.dumps(result.report.to_json()))["latency"]["sensitivity"]["metric"] == "cosine"
    assert result.plan.origin.options.allocate is Allocate.SENSITIVITY


def test_steps_are_measured_on_samples_spread_over_the_data():
    labels = np.repeat(np.arange(4), 6)   # stored sorted by class
    data = Dataset({"x": np.arange(24, dtype=np.float32)[:, None]}, labels)
    spread = data.spread(8)
    assert len(spread) == 8 and set(spread.labels) == {0, 1, 2, 3} and data.spread(100) is data
    result = prune(chain(), PlanOptions(target_latency=0.7, allocate=Allocate.SENSITIVITY, sensitivity_samples=8),
                   latency=synthetic_table(), data=_data())
    assert result.report.latency.losses.samples == 8


def test_sensitivity_needs_data_and_a_latency_target():
    with pytest.raises(UsageError, match="needs `data`"):
        prune(chain(), PlanOptions(target_latency=0.7, allocate=Allocate.SENSITIVITY), latency=synthetic_table())
    with pytest.raises(UsageError, match="needs `target_latency`"):
        PlanOptions(ratio=0.3, allocate=Allocate.SENSITIVITY)
    with pytest.raises(UsageError, match="not with `ratio_for`"):
        PlanOptions(target_latency=0.5, allocate=Allocate.SENSITIVITY, ratio_for=(("conv1", 0.5),))
    with pytest.raises(UsageError, match="sensitivity_samples"):
        PlanOptions(target_latency=0.5, allocate=Allocate.SENSITIVITY, sensitivity_samples=0)


def test_cli_allocate_sensitivity(tmp_path, capsys):
    import onnx

    onnx.save(chain(), tmp_path / "m.onnx")
    synthetic_table().save(tmp_path / "t.json")
    np.savez(tmp_path / "d.npz", x=_data(8).inputs["x"])
    common = ["prune", str(tmp_path / "m.onnx"), "--target-latency", "0.7", "--latency-table", str(tmp_path / "t.json"),
              "--allocate", "sensitivity"]
    assert main([*common, "-o", str(tmp_path / "p.onnx"), "--data", str(tmp_path / "d.npz"), "--report",
                 str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["latency"]["sensitivity"]["samples"] == 8
    assert "budget shared by sensitivity: loss of cosine on 8 samples" in capsys.readouterr().out
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err
    assert "it needs --data" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "q.onnx").exists()
