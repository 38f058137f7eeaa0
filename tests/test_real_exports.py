"""Models as other exporters and other projects write them, end to end: results equal those on the same model
without the artifact, every architecture's MACs prunable (or frozen for a real reason), fixed batches
respected, tiny outputs compared by the rounding of what computes them, default prunes in fast counts."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxprune
from models.architectures import ZOO
from models.export_zoo import build_model, export
from models.zoo_cache import zoo_model
from onnxprune.cli.main import main
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec, Reference, compare, run, session_with_outputs
from tests import graphs
from tests.channels.builder import G
from tests.graphs import rand

#: reasons a group may stay frozen in the reference zoo: the model's interface and true cross-channel ops
REAL_LIMITS = ("graph input", "reaches graph output", "normalizes across the channel axis",
               "reduces over the channel axis")


def dealias(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model without Identity-aliased initializers: each alias becomes a copy of its own."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    keep = []
    for node in out.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            out.graph.initializer.append(copy)
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def structure(model: onnx.ModelProto, name: str) -> tuple[object, ...]:
    s = onnxprune.inspect(model, InputSpec({"input": ZOO[name].input_shape}))
    return (s.batchnorm_foldable, len(s.batchnorm), s.prunable_flops_fraction,
            {g["id"]: (g["channels"], g["prunable"], g["reason"]) for g in s.groups})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_se", "efficientnet"])
def test_identity_aliased_export_equals_the_plain_one(name):
    """16 of 20 BN of a ResNet-18 exported with fresh BN stayed unfolded, 3 of 12 groups prunable."""
    aliased = onnxprune.load(zoo_model(name, "identity"))
    plain = normalize(dealias(onnx.load(zoo_model(name, "identity"))))
    assert structure(aliased, name) == structure(plain, name)
    bn_foldable, bn_total, fraction, groups = structure(aliased, name)
    assert bn_foldable == bn_total > 0 and fraction >= 0.95
    options = PlanOptions(ratio=0.3, round_to=8)
    a, b = prune(aliased, options), prune(plain, options)
    assert a.plan.groups == b.plan.groups and a.report.flops_after == b.report.flops_after


@pytest.mark.parametrize("name", ["lcnet", "resnet18", "studentnet"])
def test_paddle_export_equals_the_plain_one(name):
    """Constant-node weights, conv bias as Add(Reshape(bias)), -1 batch, '?' for H and W."""
    paddle = onnxprune.load(zoo_model(name, "paddle"))
    plain = onnxprune.load(zoo_model(name, "legacy_bn"))
    (pf, pt, pfrac, pgroups), (lf, lt, lfrac, lgroups) = structure(paddle, name), structure(plain, name)
    assert (pf, pt) == (lf, lt) and pfrac == pytest.approx(lfrac)
    assert {k: v[:2] for k, v in pgroups.items() if not k.startswith("input:")} == \
        {k: v[:2] for k, v in lgroups.items() if not k.startswith("input:")}
    options = PlanOptions(ratio=0.3, round_to=8)
    assert prune(paddle, options).plan.groups == prune(plain, options).plan.groups


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("form", ["legacy_bn", "dynamo"])
def test_prunable_macs_or_a_real_limit(name, form):
    summary = onnxprune.inspect(onnxprune.load(zoo_model(name, form)), InputSpec({"input": ZOO[name].input_shape}))
    assert not summary.flops_unresolved
    frozen = [g for g in summary.groups if not g["prunable"]]
    if summary.prunable_flops_fraction < 0.95:
        assert name == "convnext", summary.prunable_flops_fraction
    for g in frozen:
        assert any(r in g["reason"] for r in REAL_LIMITS), (g["id"], g["reason"])


def test_fixed_batch_export_goes_through_every_command(tmp_path, capsys):
    """torch.onnx.export(model, torch.randn(1, 3, H, W), path) with no dynamic axes: batch 1 is the model's."""
    src = str(zoo_model("mobilenet_v3_se", "fixed"))
    for argv in (["fold", src, "-o", str(tmp_path / "f.onnx"), "--verify"],
                 ["prune", src, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--verify"],
                 ["emit", src, "--target", "cpu", "-o", str(tmp_path / "cpu")],
                 ["emit", src, "--target", "cuda", "-o", str(tmp_path / "cuda")],
                 ["emit", src, "--target", "mobile", "-o", str(tmp_path / "mobile")],
                 ["bench", src, str(tmp_path / "p.onnx"), "--runs", "2"]):
        assert main(argv) == 0, (argv, capsys.readouterr().err)


def tiny_sigmoid_map(head_bias: float = -12.0) -> onnx.ModelProto:
    """A text-detection-like head: conv-BN-relu backbone, 1-channel conv, sigmoid probability map whose values
    are ~1e-5 everywhere on random inputs (logits around -12). Seeded: the same model whatever ran before."""
    saved, graphs.RNG = graphs.RNG, np.random.default_rng(104)
    try:
        return _tiny_sigmoid_map(head_bias)
    finally:
        graphs.RNG = saved


def _tiny_sigmoid_map(head_bias: float) -> onnx.ModelProto:
    g = G(cin=3, hw=16)

    def conv(x: str, cin: int, cout: int, scale: float, name: str) -> str:
        w = (rand(cout, cin, 3, 3) * scale).astype(np.float32)
        return g.op("Conv", [x, g.const(w), g.const(np.zeros(cout, np.float32))], name=name, pads=[1, 1, 1, 1])

    c = g.op("Relu", [g.bn(conv("x", 3, 16, 0.3, "c1"), 16)])
    c = g.op("Relu", [g.bn(conv(c, 16, 16, 0.1, "c2"), 16)])
    logits = g.op("Add", [conv(c, 16, 1, 0.05, "head"), g.const(np.full((1, 1, 1), head_bias, np.float32))])
    return g.build(g.op("Sigmoid", [logits], name="prob"))


def test_tiny_outputs_pass_when_exact():
    m = normalize(tiny_sigmoid_map())
    ref = Reference.of(m, InputSpec(batch=2))
    assert float(np.abs(ref.outputs[m.graph.output[0].name]).max()) < 1e-3
    folded = onnxprune.fold(m).model
    comparison = ref.compare(folded)
    assert comparison.within(1e-5)
    # the rule that only looked at max|output| refused this exact rewrite
    plain = compare(ref.outputs, run(session_with_outputs(folded, []), ref.feeds))
    assert not plain.within(1e-5)
    result = prune(m, PlanOptions(ratio=0.5), spec=InputSpec(batch=2), verify=True)
    assert result.report.groups_pruned == 2


def test_tiny_outputs_still_catch_a_real_error():
    m = normalize(tiny_sigmoid_map())
    ref = Reference.of(m, InputSpec(batch=2))
    broken = onnx.ModelProto()
    broken.CopyFrom(m)
    head = next(n for n in broken.graph.node if n.name == "head")
    w = next(t for t in broken.graph.initializer if t.name == head.input[1])
    values = numpy_helper.to_array(w).copy()
    values[0, 3] = 0  # one input channel of the head dropped: what a wrong slice does
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    comparison = ref.compare(broken)
    assert not comparison.within(1e-5) and "at the input of its Sigmoid" in comparison.worst_output


def test_emit_checks_tiny_outputs_by_the_same_rule(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(tiny_sigmoid_map(), path)
    assert main(["emit", str(path), "--target", "cpu", "-o", str(tmp_path / "cpu")]) == 0
    entry = json.loads((tmp_path / "cpu" / "manifest.json").read_text())["files"][0]["agreement"][0]
    assert entry["scale"] > 100 * entry["max_abs_output"]


def test_default_prune_rounds_for_the_target_and_warns_otherwise(tmp_path, capsys):
    src = str(zoo_model("mobilenet_v2", "legacy_bn"))
    assert main(["prune", src, "-o", str(tmp_path / "a.onnx"), "--ratio", "0.3", "--plan-out",
                 str(tmp_path / "a.json")]) == 0
    plan = json.loads((tmp_path / "a.json").read_text())
    assert all(len(g["keep"]) % 16 == 0 for g in plan["groups"] if len(g["keep"]) < g["channels"])
    assert "not multiples" not in capsys.readouterr().err
    assert main(["prune", src, "-o", str(tmp_path / "b.onnx"), "--ratio", "0.3", "--round-to", "1",
                 "--report", str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "not multiples of 16" in err
    assert json.loads((tmp_path / "b.json").read_text())["off_multiple"]
    assert main(["prune", src, "-o", str(tmp_path / "c.onnx"), "--ratio", "0.3", "--target", "none"]) == 0
    assert "not multiples" not in capsys.readouterr().err


def test_paddle_form_through_the_data_driven_commands(tmp_path):
    """``-1`` batch and '?' H/W: recovery, sensitivity and compress batch the data for it (they stopped with
    'need at least one array to concatenate'), mobile fixes 48x64 per axis."""
    src = str(zoo_model("lcnet", "paddle"))
    x = np.random.default_rng(0).standard_normal((32, 3, 48, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    data = str(tmp_path / "calib.npz")
    shape = ["--input-shape", "input=1x3x48x64"]
    assert main(["prune", src, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--recover", "lsq",
                 "--data", data, "--report", str(tmp_path / "r.json"), *shape]) == 0
    recovery = json.loads((tmp_path / "r.json").read_text())["recovery"]
    assert recovery["after"]["rel-l2"] < recovery["before"]["rel-l2"]
    assert main(["sensitivity", src, "-o", str(tmp_path / "sens"), "--data", data, "--ratios", "0.5",
                 *shape]) == 0
    assert main(["compress", src, "-o", str(tmp_path / "c.onnxz"), "--sparsity", "0.5", "--data", data]) == 0
    assert main(["emit", src, "--target", "mobile", "-o", str(tmp_path / "mobile"), *shape]) == 0


def test_same_model_same_groups_in_every_form():
    """One architecture exported eight ways analyses to the same groups (ids aside where exporters name
    layers differently)."""
    shapes = {}
    for form in ("legacy", "legacy_bn", "dynamo", "paddle", "fixed", "dynamo_default", "identity", "noshape"):
        s = onnxprune.inspect(onnxprune.load(zoo_model("shufflenet_v2", form)))
        shapes[form] = sorted((g["channels"], g["prunable"]) for g in s.groups)
    assert len({tuple(v) for v in shapes.values()}) == 1, shapes


def test_export_forms_are_what_they_claim():
    entry = ZOO["studentnet"]
    paddle = export(entry, "paddle", model=build_model(entry))
    assert not paddle.graph.initializer and paddle.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    assert [d.dim_param for d in paddle.graph.input[0].type.tensor_type.shape.dim[2:]] == ["?", "?"]
    assert any(n.op_type == "Reshape" for n in paddle.graph.node)
    fixed = export(entry, "fixed")
    assert all(d.HasField("dim_value") for d in fixed.graph.input[0].type.tensor_type.shape.dim)
    assert not export(entry, "noshape").graph.output[0].HasField("type")
    assert sum(n.op_type == "Identity" for n in export(entry, "identity").graph.node) > 0


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("name", ["shufflenet_v2", "convnext", "crnn", "unet", "efficientnet"])
def test_new_architectures_at_older_opsets(name, opset):
    """At opset 11/13 the exporter writes LayerNorm out, Squeeze/Split axes as attributes, and shape arithmetic
    ONNX's data propagation does not follow (ShuffleNet's reshape targets lost their rank at opset 13)."""
    model = normalize(export(ZOO[name], "legacy_bn", opset=opset))
    spec = InputSpec({"input": ZOO[name].input_shape})
    summary = onnxprune.inspect(model, spec)
    assert summary.prunable_flops_fraction >= (0.75 if name == "convnext" else 0.95)
    for g in summary.groups:
        assert g["prunable"] or any(r in g["reason"] for r in REAL_LIMITS), g["reason"]
    assert prune(model, PlanOptions(ratio=0.3, round_to=8), spec=spec, verify=True).report.groups_pruned > 0
