"""onnxprune finetune: the differentiable engine agrees with ONNX Runtime (or refuses), weights are written back
into the same graph, and distillation improves a pruned model on held-out digits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from models.architectures import ZOO
from models.zoo_cache import zoo_model
from onnxprune.api import load as onnxprune_load
from onnxprune.channels import analyze
from onnxprune.cli.main import main
from onnxprune.data import load_data
from onnxprune.errors import UnsupportedModelError, UsageError, VerificationError
from onnxprune.io import read_model
from onnxprune.training import (
    FinetuneOptions,
    OnnxModule,
    finetune,
    trainable_names,
    verify_engine,
    write_back,
)
from onnxprune.training import engine as engine_module
from onnxprune.training.engine import to_torch
from onnxprune.verify import (
    InputSpec,
    make_session,
    random_inputs,
    resolve_input_shapes,
    run,
)
from tests.graphs import init

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
CALIB = DIGITS / "digits_calib.npz"
TEST = DIGITS / "digits_test.npz"


def feeds_for(model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    return random_inputs(model, resolve_input_shapes(model, InputSpec(batch=batch)))


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory) -> Path:
    """The digits training split (the models' own; disjoint from the test split)."""
    from models.train_digits import load_digits_split

    x_tr, y_tr, _, _ = load_digits_split()
    path = tmp_path_factory.mktemp("train") / "digits_train.npz"
    np.savez(path, input=x_tr.astype(np.float32), labels=y_tr.astype(np.int64))
    return path


# --- the engine ----------------------------------------------------------------------------------------------

#: every zoo model in the two forms the export tests already build, plus the Identity-aliased weights form
ZOO_FORMS = [(n, f) for n in ZOO for f in ("legacy_bn", "dynamo")] + \
    [(n, "identity") for n in ("resnet18", "mobilenet_v3_se", "efficientnet", "yolo_c2f", "crnn")]


@pytest.mark.parametrize(("name", "form"), ZOO_FORMS)
def test_engine_agrees_with_onnx_runtime_on_every_zoo_model(name, form):
    model = read_model(zoo_model(name, form))
    relative = verify_engine(model, OnnxModule(model), feeds_for(model))
    assert relative < 1e-5


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", [0, 1])       # GRU: linear_before_reset; LSTM: peepholes and initial states
def test_recurrent_layers_agree_with_onnx_runtime(op, direction, variant):
    rng = np.random.default_rng(0)
    dirs, hidden, size, gates = (2 if direction == "bidirectional" else 1), 5, 3, (4 if op == "LSTM" else 3)
    inits = [init("W", rng.standard_normal((dirs, gates * hidden, size)).astype(np.float32)),
             init("R", rng.standard_normal((dirs, gates * hidden, hidden)).astype(np.float32) * 0.5),
             init("B", rng.standard_normal((dirs, 2 * gates * hidden)).astype(np.float32))]
    names = ["x", "W", "R", "B"]
    attrs = {"hidden_size": hidden, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = variant
    elif variant:
        inits += [init("h0", rng.standard_normal((dirs, 2, hidden)).astype(np.float32)),
                  init("c0", rng.standard_normal((dirs, 2, hidden)).astype(np.float32)),
                  init("P", rng.standard_normal((dirs, 3 * hidden)).astype(np.float32))]
        names += ["", "h0", "c0", "P"]
    outputs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outputs, **attrs)
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 2, size])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    feeds = {"x": rng.standard_normal((7, 2, size)).astype(np.float32)}
    assert verify_engine(model, OnnxModule(model), feeds) < 1e-5


def test_engine_refuses_a_model_it_does_not_reproduce(monkeypatch):
    model = read_model(DIGITS / "studentnet.onnx")
    conv = engine_module.OPS["Conv"]
    monkeypatch.setitem(engine_module.OPS, "Conv", lambda ctx, *xs: conv(ctx, *xs) * 1.001)   # off by 0.1%
    with pytest.raises(VerificationError, match="disagrees with ONNX Runtime"):
        verify_engine(model, OnnxModule(model), feeds_for(model))


def cancelling_convs(scale: float = 100.0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """y = conv(x, W) - conv(x, W + dW): large terms cancel, so float32 rounding decides most of y."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, 64, 3, 3)) * scale).astype(np.float32)
    w2 = (w1 + rng.standard_normal(w1.shape).astype(np.float32) * 1e-3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]), helper.make_node("Sub", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "cancel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64, 8, 8])],
                              [init("w1", w1), init("w2", w2)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((2, 64, 8, 8)).astype(np.float32)}


def test_engine_check_tells_float32_rounding_from_a_wrong_result():
    """Two right float32 implementations of a cancelling graph differ far beyond 1e-5 relative; the float64
    second opinion accepts that, and still refuses an engine that computes something else."""
    from onnxprune.verify import Reference

    model, feeds = cancelling_convs()
    module = OnnxModule(model)
    got = {k: v.detach().numpy() for k, v in module(to_torch(feeds), []).items()}
    assert Reference.on(model, feeds).compare_results(got).relative > 1e-3      # the float32 check alone refuses
    assert verify_engine(model, module, feeds) > 1e-3                           # rounding explains it: accepted
    wrong = OnnxModule(model)
    with torch.no_grad():
        wrong.named_onnx_parameters()["w2"].mul_(1 + 1e-5)                     # a different model, by a little
    with pytest.raises(VerificationError, match="disagrees with ONNX Runtime"):
        verify_engine(model, wrong, feeds)


def test_unsupported_op_is_a_one_line_refusal(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Hardmax", ["m"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [init("w", np.eye(4, dtype=np.float32))]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32), labels=np.zeros(4, np.int64))
    code = main(["finetune", str(path), "-o", str(tmp_path / "o.onnx"), "--data", str(tmp_path / "d.npz"), "-q"])
    err = capsys.readouterr().err
    assert code == UnsupportedModelError.exit_code and "Hardmax (no implementation)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.onnx").exists()


def weights_as_constants_and_aliases() -> onnx.ModelProto:
    """Weights in the forms other exporters write: a Constant node, an Identity alias, a Reshape(bias)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    fc = rng.standard_normal((6, 5)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value")),
             helper.make_node("Identity", ["b_raw"], ["b_alias"]),
             helper.make_node("Reshape", ["b_alias", "b_shape"], ["b"]),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    inits = [init("b_raw", b), init("b_shape", np.array([6], np.int64)), init("fc", fc)]
    graph = helper.make_graph(nodes, "aliases", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_constant_and_aliased_weights_train_and_write_back_into_the_same_graph():
    model = weights_as_constants_and_aliases()
    assert sorted(trainable_names(model)) == ["b_raw", "fc", "w"]
    module = OnnxModule(model)
    verify_engine(model, module, feeds_for(model))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)
    out = write_back(model, module)
    onnx.checker.check_model(out, full_check=True)
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in out.graph.node] == \
        [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    assert [i.name for i in out.graph.initializer] == [i.name for i in model.graph.initializer]
    assert out.opset_import == model.opset_import and out.graph.input == model.graph.input
    feeds = feeds_for(model)
    with torch.no_grad():
        expected = module(engine_module.to_torch(feeds))["y"].numpy()
    np.testing.assert_allclose(run(make_session(out), feeds)["y"], expected, rtol=1e-4, atol=1e-5)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_array_equal(after["b_shape"], before["b_shape"])   # shape operands are never trained
    assert not np.array_equal(after["b_raw"], before["b_raw"])


# --- fine-tuning -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pruned_student(tmp_path_factory) -> Path:
    """StudentNet at -70% MACs with least-squares recovery: below the original on held-out digits."""
    out = tmp_path_factory.mktemp("student") / "student.onnx"
    assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(out), "--target-flops", "0.3", "--round-to",
                 "8", "--recover", "lsq", "--data", str(CALIB), "-q"]) == 0
    return out


def accuracy(path: Path) -> float:
    data = np.load(TEST)
    session = make_session(str(path), optimize=True)
    logits = session.run(None, {"input": data["input"]})[0]
    return float((logits.argmax(1) == data["labels"]).mean())


def test_finetune_beats_lsq_on_held_out_digits_and_keeps_the_graph(pruned_student, digits_train, tmp_path):
    out, report = tmp_path / "ft.onnx", tmp_path / "ft.json"
    assert main(["finetune", str(pruned_student), "-o", str(out), "--teacher", str(DIGITS / "studentnet.onnx"),
                 "--data", str(digits_train), "--epochs", "2", "--threads", "1", "--report", str(report), "-q"]) == 0
    lsq, tuned = accuracy(pruned_student), accuracy(out)
    assert tuned > lsq + 0.02, (lsq, tuned)
    before, after = onnx.load(pruned_student), onnx.load(out)
    assert [(n.name, n.op_type) for n in after.graph.node] == [(n.name, n.op_type) for n in before.graph.node]
    assert after.graph.input == before.graph.input and after.graph.output == before.graph.output
    r = json.loads(report.read_text())
    assert r["steps"] == 2 * (1347 // 32) and len(r["loss_curve"]) == r["steps"] and r["trained"]
    assert r["loss_curve"][-1][1] < r["loss_curve"][0][1]


def test_kd_only_without_labels_freeze_and_never_worse_on_eval(pruned_student, digits_train, tmp_path):
    student = read_model(pruned_student)
    teacher = read_model(DIGITS / "studentnet.onnx")
    data = load_data(digits_train, student)
    unlabelled = type(data)(data.inputs, None)
    first_conv = next(n for n in student.graph.node if n.op_type == "Conv")
    frozen = {first_conv.input[1]} | ({first_conv.input[2]} if len(first_conv.input) > 2 else set())
    result = finetune(student, unlabelled, teacher=teacher, eval_data=load_data(TEST, student),
                      options=FinetuneOptions(steps=40, threads=1, freeze=(first_conv.name,)))
    assert set(result.frozen) == frozen and result.after is not None and result.before is not None
    assert result.after["accuracy"] >= result.before["accuracy"]      # the best on eval data, the start included
    old = {t.name: numpy_helper.to_array(t) for t in student.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    for name in frozen:
        assert new[name].tobytes() == old[name].tobytes()             # frozen: bit-equal
    assert result.best_step == 0 or any(not np.array_equal(new[n], old[n]) for n in result.trained)


def test_masks_keep_pruned_connections_at_zero(pruned_student, digits_train):
    student = read_model(pruned_student)
    for t in student.graph.initializer:          # prune half of every weight's connections, as compress does
        w = numpy_helper.to_array(t)
        if w.ndim >= 2:
            w = np.where(np.abs(w) < np.median(np.abs(w)), 0, w).astype(w.dtype)
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    zeros = {t.name: numpy_helper.to_array(t) == 0 for t in student.graph.initializer}
    result = finetune(student, load_data(digits_train, student), teacher=read_model(DIGITS / "studentnet.onnx"),
                      options=FinetuneOptions(steps=10, threads=1, masks=True))
    for t in result.model.graph.initializer:
        w = numpy_helper.to_array(t)
        assert (w[zeros[t.name]] == 0).all(), t.name


def test_sigterm_during_finetune_leaves_nothing_half_written(pruned_student, digits_train, tmp_path):
    out = tmp_path / "out" / "ft.onnx"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "onnxprune", "finetune", str(pruned_student), "-o", str(out),
                             "--teacher", str(DIGITS / "studentnet.onnx"), "--data", str(digits_train),
                             "--steps", "100000", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    seen = ""
    while "fine-tuning:" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096).decode()
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, seen + err
    assert list(out.parent.iterdir()) == []


def test_compress_retraining_keeps_masks_and_codebooks_and_decodes_bit_exact(digits_train):
    from onnxprune.passes.prune_connections import ConnectionPruning

    from onnxprune.compression.pipeline import (
        CompressOptions,
        compress,
        decode,
        decompress,
    )
    from onnxprune.training.deep_compression import DistillRetrainer

    class MaskedOnly(DistillRetrainer):
        def centroids(self, model, teacher, ties):
            return model, {name: codebook for name, (codebook, _) in ties.items()}

    model = onnxprune_load(DIGITS / "studentnet.onnx")
    options = CompressOptions(ConnectionPruning(sparsity=0.7))
    train = load_data(digits_train, model)
    plain = compress(model, options)
    masked = compress(model, options, retrain=MaskedOnly(train, FinetuneOptions(steps=15, threads=1)))
    tuned = compress(model, options, retrain=DistillRetrainer(train, FinetuneOptions(steps=15, threads=1)))
    pruned = {t.name: t.values == 0 for t in decode(plain.container)[1]}
    shared = {t.name: t for t in decode(masked.container)[1]}
    changed = 0
    for t in decode(tuned.container)[1]:
        assert np.array_equal(t.values == 0, pruned[t.name]), t.name         # retraining kept every pruned zero
        s = shared[t.name]
        assert t.codebook is not None and t.codebook.shape == s.codebook.shape and t.codebook[0] == 0
        assert np.array_equal(t.indices, s.indices)                           # centroid indices fixed
        changed += not np.array_equal(t.codebook, s.codebook)
    assert changed                                                            # the codebooks were trained
    restored = decompress(tuned.container)
    got = {i.name: numpy_helper.to_array(i) for i in restored.graph.initializer}
    for i in tuned.model.graph.initializer:
        assert got[i.name].tobytes() == numpy_helper.to_array(i).tobytes(), i.name   # bit-exact decompress


def test_compress_gradual_pruning_retrains_between_steps_and_reaches_the_sparsity(digits_train, tmp_path):
    from onnxprune.passes.prune_connections import ConnectionPruning

    from onnxprune.compression.pipeline import CompressOptions, compress
    from onnxprune.training.deep_compression import DistillRetrainer

    calls = []

    class Recording(DistillRetrainer):
        def masked(self, model, teacher, share=1.0):
            zeros = sum(int((numpy_helper.to_array(i) == 0).sum()) for i in model.graph.initializer
                        if i.name in coded)
            calls.append((share, zeros))
            return super().masked(model, teacher, share)

    from onnxprune.compression.pipeline import coded_weights

    model = onnxprune_load(DIGITS / "studentnet.onnx")
    coded = coded_weights(onnxprune.fold(model).model)
    retrain = Recording(load_data(digits_train, model), FinetuneOptions(steps=6, threads=1))
    result = compress(model, CompressOptions(ConnectionPruning(sparsity=0.8), prune_steps=3), retrain=retrain)
    assert [share for share, _ in calls] == [1 / 3] * 3
    zeros = [z for _, z in calls]
    assert zeros[0] < zeros[1] < zeros[2]                  # the cubic schedule: each step prunes more
    assert abs(sum(r.nonzero for r in result.layers) / sum(r.weights for r in result.layers) - 0.2) < 0.01
    with pytest.raises(UsageError, match="needs retraining"):
        compress(model, CompressOptions(ConnectionPruning(sparsity=0.8), prune_steps=3))
    assert main(["compress", str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "c.onnxz"), "--sparsity", "0.8",
                 "--prune-steps", "3", "-q"]) == UsageError.exit_code


@pytest.mark.parametrize("schedule", ["oneshot", "iterative", "layerwise"])
def test_prune_with_finetune_oneshot_and_cycles(digits_train, tmp_path, schedule):
    out, report = tmp_path / "p.onnx", tmp_path / "p.json"
    assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(out), "--target-flops", "0.5", "--round-to", "8",
                 "--recover", "lsq", "--data", str(CALIB), "--finetune-epochs", "0.4", "--finetune-data",
                 str(digits_train), "--schedule", schedule, "--steps", "2", "--report", str(report), "-q"]) == 0
    r = json.loads(report.read_text())
    if schedule == "oneshot":
        assert r["finetune"]["steps"] == round(0.4 * (1347 // 32))
    else:
        assert [x["round"] for x in r["rounds"]] == [1, 2] and r["rounds"][-1]["macs_kept"] <= 0.5
        assert all(x["finetune_steps"] == round(0.2 * (1347 // 32)) for x in r["rounds"])   # same total budget
    if schedule == "layerwise":
        one_shot = tmp_path / "oneshot.json"
        assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "o.onnx"), "--target-flops", "0.5",
                     "--round-to", "8", "--plan-out", str(one_shot), "-q"]) == 0
        planned = {g["id"]: g["channels"] - len(g["keep"]) for g in json.loads(one_shot.read_text())["groups"]}
        order = [x["group"] for x in r["order"]]
        assert sorted(order) == sorted(g for g, n in planned.items() if n)   # every planned group, ordered once
        losses = [x["loss"] for x in r["order"]]
        assert losses == sorted(losses) and r["left_whole"] == []             # least sensitive first
        assert r["rounds"][0]["macs_kept"] > r["rounds"][1]["macs_kept"]      # round 1 pruned only its chunk
        final = analyze(onnxprune_load(out))
        # the same channel counts as the one-shot plan: each group lost exactly its planned count
        kept = {g.id: g.channels for g in final.groups}
        for gid, removed in planned.items():
            if gid in kept:
                original = next(g["channels"] for g in json.loads(one_shot.read_text())["groups"] if g["id"] == gid)
                assert kept[gid] == original - removed, gid
    assert accuracy(out) > 0.5


def test_match_auto_matches_the_tensors_pruning_kept_whole(pruned_student, digits_train, tmp_path):
    """StudentNet pruned with its last conv left whole: auto-matching picks tensors of the same shape in both
    graphs (the last conv's output and what follows it); a model where pruning changed every such tensor gets
    none, and says so."""
    from onnxprune.training.train import AUTO_MATCH_MAX
    from onnxprune.verify import session_with_outputs

    partial = tmp_path / "partial.onnx"
    assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(partial), "--target-flops", "0.5",
                 "--round-to", "8", "--exclude", "*cnn.7.3*", "-q"]) == 0
    found = {}
    for student in (partial, pruned_student):
        report = tmp_path / "r.json"
        assert main(["finetune", str(student), "-o", str(tmp_path / "f.onnx"), "--teacher",
                     str(DIGITS / "studentnet.onnx"), "--data", str(digits_train), "--steps", "2", "--threads", "1",
                     "--match", "auto", "--report", str(report), "-q"]) == 0
        found[student] = json.loads(report.read_text())["matched"]
    matched = found[partial]
    assert 1 <= len(matched) <= AUTO_MATCH_MAX and "/cnn/cnn.7/cnn.7.3/Conv_output_0" in matched
    assert found[pruned_student] == []            # every prunable group pruned: nothing keeps its shape
    feeds = feeds_for(onnxprune_load(DIGITS / "studentnet.onnx"))
    student = run(session_with_outputs(onnx.load(partial), matched), feeds)
    teacher = run(session_with_outputs(onnx.load(DIGITS / "studentnet.onnx"), matched), feeds)
    assert all(student[n].shape == teacher[n].shape for n in matched)
    assert main(["finetune", str(pruned_student), "-o", str(tmp_path / "g.onnx"), "--data", str(digits_train),
                 "--steps", "1", "--match", "auto", "-q"]) == UsageError.exit_code   # matching needs a teacher


def test_recipe_finetune_step_distils_the_input_model(digits_train, tmp_path):
    from onnxprune.recipe import parse_recipe

    recipe = parse_recipe(f"data: {CALIB}\nsteps:\n  - prune: {{target-flops: 0.5, recover: lsq}}\n"
                          f"  - finetune: {{data: {digits_train}, steps: 5, threads: 1}}\n")
    assert [s.kind for s in recipe.steps] == ["prune", "finetune"]
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "studentnet.onnx").write_bytes((DIGITS / "studentnet.onnx").read_bytes())
    (tmp_path / "r.yaml").write_text(f"data: {CALIB}\nsteps:\n  - prune: {{target-flops: 0.5, recover: lsq}}\n"
                                     f"  - finetune: {{data: {digits_train}, steps: 5, threads: 1}}\n")
    assert main(["zoo", str(zoo), "-o", str(tmp_path / "out"), "--recipe", str(tmp_path / "r.yaml"), "-q"]) == 0
    folder = tmp_path / "out" / "studentnet"
    report = json.loads(next(folder.glob("*-finetune.json")).read_text())
    assert report["teacher"] == str(zoo / "studentnet.onnx") and report["steps"] == 5


def test_freeze_sensitive_reads_a_sensitivity_run(tmp_path):
    from onnxprune.training.train import sensitive_layers

    report = {"metric": "accuracy", "criterion": "l1", "baseline": {"accuracy": 0.9},
              "points": [{"group": "convA", "ratio": 0.1, "channels_kept": 9, "macs_kept": 0.9,
                          "values": {"accuracy": 0.85}},
                         {"group": "convA", "ratio": 0.5, "channels_kept": 5, "macs_kept": 0.5,
                          "values": {"accuracy": 0.10}},
                         {"group": "convB", "ratio": 0.1, "channels_kept": 9, "macs_kept": 0.9,
                          "values": {"accuracy": 0.899}},
                         {"group": "convB", "ratio": 0.5, "channels_kept": 5, "macs_kept": 0.5,
                          "values": {"accuracy": 0.20}}]}
    (tmp_path / "sensitivity.json").write_text(json.dumps(report))
    assert sensitive_layers(tmp_path, 0.01) == ("convA",)       # judged at the smallest ratio only
    assert sensitive_layers(tmp_path, 0.1) == ()
