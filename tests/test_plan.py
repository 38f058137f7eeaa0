"""Plans: options, JSON round trip and replay, criteria, and the verification oracle catching a wrong rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.channels import analyze
from onnxprune.channels.rules import layers
from onnxprune.cli.main import main
from onnxprune.data import Dataset
from onnxprune.errors import UsageError, VerificationError
from onnxprune.importance import Criterion, score_groups
from onnxprune.plan import PlanOptions, PruningPlan, round_kept
from onnxprune.pruning import plan_pruning, prune
from onnxprune.verify import InputSpec, Reference


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    from models.zoo_cache import zoo_model

    return onnxprune.load(zoo_model("resnet18", "legacy_bn"))


@pytest.fixture(scope="module")
def mobilenet():
    from models.zoo_cache import zoo_model

    return onnxprune.load(zoo_model("mobilenet_v2", "legacy_bn"))


def kept(plan: PruningPlan) -> dict[str, int]:
    return {g.id: len(g.keep) for g in plan.groups}


def test_ratio_zero_gives_identical_outputs(resnet18):
    result = prune(resnet18, PlanOptions(ratio=0.0))
    ref = Reference.of(resnet18, InputSpec(batch=2))
    assert ref.compare(result.model).max_abs_diff == 0.0
    assert result.report.flops_after == result.report.flops_before


def test_plan_json_round_trip_and_replay(resnet18, tmp_path):
    result = prune(resnet18, PlanOptions(ratio=0.4, criterion=Criterion.L2))
    path = tmp_path / "plan.json"
    result.plan.save(path)
    replay = PruningPlan.load(path)
    assert replay == result.plan
    again = prune(resnet18, plan=replay)
    assert Reference.of(result.model, InputSpec(batch=2)).compare(again.model).max_abs_diff == 0.0


def test_plan_for_another_model_is_refused(resnet18, mobilenet):
    plan, _ = plan_pruning(mobilenet, PlanOptions(ratio=0.3))
    from onnxprune.errors import PreconditionError

    with pytest.raises(PreconditionError, match="does not exist|channels"):
        prune(resnet18, plan=plan)


def test_ratio_for_exclude_min_channels(resnet18):
    plan, analysis = plan_pruning(resnet18, PlanOptions(ratio=0.5, ratio_for=(("/layer4*", 0.25),),
                                                        exclude=("/layer1/*",), min_channels=40))
    k = kept(plan)
    for g in analysis.prunable:
        if any(s.startswith("/layer1/") for s in g.sources):
            assert k[g.id] == g.channels
        elif any(s.startswith("/layer4") for s in (g.id,)):
            assert k[g.id] == g.channels - round(0.25 * g.channels)
        else:
            assert k[g.id] == max(g.channels - round(0.5 * g.channels), min(40, g.channels))


@pytest.mark.parametrize("n", [8, 16])
def test_round_to(resnet18, n):
    plan, analysis = plan_pruning(resnet18, PlanOptions(ratio=0.3, round_to=n))
    assert all(len(g.keep) % n == 0 or len(g.keep) == g.channels for g in plan.groups)
    assert round_kept(45, 64, 8, 1) == 48 and round_kept(3, 64, 8, 1) == 8 and round_kept(10, 12, 16, 1) == 12


def test_global_ranking_removes_the_requested_share(resnet18):
    plan, analysis = plan_pruning(resnet18, PlanOptions(ratio=0.4, global_ranking=True))
    total = sum(g.channels for g in analysis.prunable)
    removed = sum(g.removed for g in plan.groups)
    assert removed == round(0.4 * total)
    assert len({round(g.removed / g.channels, 2) for g in plan.groups}) > 1  # not uniform


@pytest.mark.parametrize("target", [0.7, 0.5, 0.3])
def test_target_flops_is_met(mobilenet, target):
    result = prune(mobilenet, PlanOptions(target_flops=target, round_to=8))
    ratio = result.report.flops_after / result.report.flops_before
    assert ratio <= target and ratio > target - 0.12


def test_criteria_rank_differently_and_random_is_seeded(resnet18):
    analysis = analyze(resnet18)
    data = Dataset(Reference.of(resnet18, InputSpec(batch=8)).feeds, None)
    chosen = {}
    for c in Criterion:
        plan, _ = plan_pruning(resnet18, PlanOptions(ratio=0.5, criterion=c), data=data if c.needs_data else None)
        chosen[c] = {g.id: g.keep for g in plan.groups}
    assert len({json.dumps(v, sort_keys=True) for v in chosen.values()}) == len(Criterion)
    again, _ = plan_pruning(resnet18, PlanOptions(ratio=0.5, criterion=Criterion.RANDOM))
    assert {g.id: g.keep for g in again.groups} == chosen[Criterion.RANDOM]
    other, _ = plan_pruning(resnet18, PlanOptions(ratio=0.5, criterion=Criterion.RANDOM, seed=1))
    assert {g.id: g.keep for g in other.groups} != chosen[Criterion.RANDOM]
    assert analysis.prunable


def test_l1_scores_follow_filter_norms():
    """A plain conv group: the L1 score of channel i is |W[i]|_1 / mean_j |W[j]|_1."""
    from onnxprune.normalize import normalize
    from tests.channels.builder import G

    g = G()
    y = g.conv(g.op("Relu", [g.conv("x", 4, 6, name="c1", bias=False)]), 6, 2, name="c2")
    m = normalize(g.build(y))
    w = onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if list(t.dims) == [6, 4, 3, 3]))
    norms = np.abs(w.astype(np.float64)).reshape(6, -1).sum(1)
    scores = score_groups(analyze(m), Criterion.L1)["c1"]
    np.testing.assert_allclose(scores, norms / norms.mean())
    dwpw = score_groups(analyze(m), Criterion.DW_PW)["c1"]
    w2 = onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if list(t.dims) == [2, 6, 3, 3]))
    cols = np.abs(w2.astype(np.float64)).swapaxes(0, 1).reshape(6, -1).sum(1)
    np.testing.assert_allclose(dwpw, norms / norms.mean() + cols / cols.mean())


def test_verify_catches_a_wrong_consumer_slice(resnet18, monkeypatch):
    """If a consumer kept the wrong input columns, the masked-model comparison must fail."""
    correct_rewrite = layers.ConvRule.rewrite

    def wrong_rewrite(self, node, ctx):
        x = node.inputs[0]
        if node.op == "Conv" and int(node.attrs.get("group", 1)) == 1 and ctx.changed(x):
            right = ctx.keep

            def keep(t):  # same number of input channels, but shifted by one
                mask = right(t)
                return np.roll(mask, 1) if t is x else mask

            ctx.keep = keep
            try:
                correct_rewrite(self, node, ctx)
            finally:
                del ctx.keep  # back to the class method
            return
        correct_rewrite(self, node, ctx)

    monkeypatch.setattr(layers.ConvRule, "rewrite", wrong_rewrite)
    with pytest.raises(VerificationError, match="differs from the masked original"):
        prune(resnet18, PlanOptions(ratio=0.5), verify=True)


def test_prune_cli_plan_report_and_explain(tmp_path, capsys):
    from models.zoo_cache import zoo_model

    src = zoo_model("flatten_gemm", "legacy_bn")
    out, plan, report = tmp_path / "p.onnx", tmp_path / "plan.json", tmp_path / "report.json"
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--round-to", "8", "--verify", "--plan-out", str(plan),
                 "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert {"flops_before", "flops_after", "params_before", "params_after", "groups_pruned", "groups_frozen",
            "max_abs_diff"} <= set(data)
    assert data["flops_after"] < data["flops_before"] and data["groups_pruned"] == 3
    assert main(["prune", str(src), "-o", str(tmp_path / "q.onnx"), "--plan", str(plan), "--json"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(src), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "frozen" in text and "graph output" in text
    assert main(["inspect", str(src), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # every layer reads or writes a prunable group (the last Gemm reads one): all MACs can shrink
    assert info["prunable_flops_fraction"] == 1.0
    assert {"id", "channels", "prunable", "reason", "members"} <= set(info["groups"][0])


def test_prune_cli_bad_options(tmp_path, capsys):
    from models.zoo_cache import zoo_model

    src = str(zoo_model("flatten_gemm", "legacy_bn"))
    assert main(["prune", src, "-o", str(tmp_path / "a.onnx"), "--ratio", "1.5"]) == UsageError.exit_code
    assert main(["prune", src, "-o", str(tmp_path / "a.onnx"), "--ratio-for", "nonsense"]) == UsageError.exit_code
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["prune", src, "-o", str(tmp_path / "a.onnx"), "--plan", str(tmp_path / "bad.json")]) == \
        UsageError.exit_code
    err = capsys.readouterr().err
    assert err.count("onnxprune: error:") == 3 and "Traceback" not in err
    assert not (tmp_path / "a.onnx").exists()


@pytest.mark.parametrize("edit,reason", [
    (lambda g, frozen: g.update(id="no-such-group"), "does not exist in this model"),
    (lambda g, frozen: g.update(channels=g["channels"] + 1), "channels, the model has"),
    (lambda g, frozen: g.update(keep=[]), "kept indices must be non-empty"),
    (lambda g, frozen: g.update(id=frozen["id"], channels=frozen["channels"], keep=[0]), "which is frozen"),
])
def test_a_plan_for_another_model_is_a_precondition_error(tmp_path, capsys, edit, reason):
    """Each reason a plan can fail the pruning pass's precondition, raised before anything is rewritten: exit 8."""
    from onnxprune.errors import PreconditionError

    src = Path(onnxprune.__file__).resolve().parents[1] / "models" / "digits" / "studentnet.onnx"
    plan_path, out = tmp_path / "plan.json", tmp_path / "out.onnx"
    assert main(["prune", str(src), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--plan-out",
                 str(plan_path), "-q"]) == 0
    plan = json.loads(plan_path.read_text())
    frozen = next(g for g in analyze(onnxprune.load(src)).groups if not g.prunable)
    edit(plan["groups"][0], {"id": frozen.id, "channels": frozen.channels})
    plan_path.write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["prune", str(src), "-o", str(out), "--plan", str(plan_path), "-q"]) == PreconditionError.exit_code
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1 and not out.exists()


def test_plan_origin_round_trips_through_json(resnet18, tmp_path):
    """The plan's origin is typed (PlanOrigin): the options it was planned with and the schedule come back from
    its JSON as they were; a plan whose options block has keys this version does not know still loads."""
    from onnxprune.plan import PlanOrigin
    from onnxprune.schedule import Schedule, ScheduleOptions

    options = PlanOptions(ratio=0.3, ratio_for=(("/layer4*", 0.25),), exclude=("/layer1/*",), round_to=8)
    result = prune(resnet18, options, schedule=ScheduleOptions(Schedule.ITERATIVE, steps=2))
    result.plan.save(tmp_path / "plan.json")
    back = PruningPlan.load(tmp_path / "plan.json")
    assert back.origin == result.plan.origin
    assert back.origin.options == options and back.origin.schedule == "iterative" and back.origin.steps == 2
    raw = json.loads((tmp_path / "plan.json").read_text())
    raw["options"]["a_key_from_the_future"] = 1
    assert PruningPlan.from_json(raw).origin.options == options
    assert PruningPlan.from_json({**raw, "options": None}).origin == PlanOrigin()
