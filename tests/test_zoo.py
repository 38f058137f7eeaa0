"""Recipes, `onnxprune run`, and `onnxprune zoo` on a zoo with good and broken models: local and Ray backends,
manifests, timeouts, memory caps, resume after an interrupted run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from onnxprune.cli.main import main
from onnxprune.recipe import RecipeError, parse_recipe
from tests.graphs import init, model
from tests.processes import INTERRUPTIBLE

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
RECIPE = """
steps:
  - fold
  - prune: {ratio: 0.25, round_to: 2}
  - compress: {sparsity: 0.5}
"""


def small_cnn(opset: int = 17, seed: int = 0) -> "onnx.ModelProto":  # noqa: F821
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    return model(nodes, [("x", ["N", 3, 8, 8])], ["y"], [init("w1", w1), init("w2", w2)], opset)


@pytest.fixture()
def zoo(tmp_path: Path) -> Path:
    """Two good models, a truncated file, an unsupported opset and a non-model, in nested folders."""
    import onnx

    root = tmp_path / "zoo"
    (root / "vision").mkdir(parents=True)
    shutil.copy(DIGITS / "studentnet.onnx", root / "vision" / "studentnet.onnx")
    onnx.save(small_cnn(), root / "small.onnx")
    (root / "truncated.onnx").write_bytes((DIGITS / "studentnet.onnx").read_bytes()[:3000])
    onnx.save(small_cnn(opset=9), root / "old_opset.onnx")
    (root / "notes.txt").write_text("not a model")
    return root


def recipe_file(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def summary(outdir: Path) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in json.loads((outdir / "summary.json").read_text())["models"]}


# --- recipes -------------------------------------------------------------------------------------------------

def test_recipe_parses_steps_with_cli_option_names():
    r = parse_recipe(RECIPE + "data: calib.npz\n")
    assert [s.kind for s in r.steps] == ["fold", "prune", "compress"]
    assert r.steps[1].option("round-to") == 2 and r.data == "calib.npz"
    dashed = parse_recipe(RECIPE.replace("round_to", "round-to") + "data: calib.npz\n")
    assert dashed.fingerprint() == r.fingerprint()


@pytest.mark.parametrize("text,message", [
    ("steps:\n  - prune: {targt-flops: 0.7}\n", r"steps\[0\]\.prune\.targt-flops: unknown option"),
    ("steps:\n  - shrink\n", r"steps\[0\]: unknown step 'shrink'"),
    ("steps:\n  - fold\n  - prune: {ratio: [0.1, 0.2]}\n", r"steps\[1\]\.prune\.ratio: takes one value"),
    ("steps:\n  - prune: {verify: yes-please}\n", r"steps\[0\]\.prune\.verify: a flag"),
    ("steps:\n  - fold: {output: x.onnx}\n", r"steps\[0\]\.fold\.output: set by the runner"),
    ("steps: [fold\n", r"not valid YAML"),
    ("steps: []\n", r"'steps' must be a non-empty list"),
    ("steps: [fold]\nmodel: x\n", r"unknown key\(s\) model"),
])
def test_bad_recipes_name_the_key(text, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text, "r.yaml")


def test_run_one_model_through_a_recipe(tmp_path, capsys):
    recipe = recipe_file(tmp_path, RECIPE + "  - bench: {runs: 3}\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), str(DIGITS / "studentnet.onnx"), "-o", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["steps_done"] == ["fold", "prune", "compress", "bench"]
    assert result["macs_after"] < result["macs_before"] and result["compressed_bytes"] < result["bytes_after"]
    assert result["latency_ratio"] > 0 and (out / result["final_model"]).is_file()
    assert {p.name for p in out.iterdir()} >= {"01-fold.onnx", "02-prune.onnx", "03-compress.onnxz", "log.txt"}
    assert not list(tmp_path.glob(".out.staging*"))
    capsys.readouterr()
    bad = recipe_file(tmp_path, "steps:\n  - prune: {ratoi: 0.3}\n")
    assert main(["run", str(bad), str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps[0].prune.ratoi" in err and not (tmp_path / "o2").exists()


# --- zoo, local ----------------------------------------------------------------------------------------------

def test_zoo_records_failures_and_goes_on(zoo, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["zoo", str(zoo), "-o", str(out), "--recipe", str(recipe_file(tmp_path)), "--jobs", "2"])
    assert rc == 9
    assert "2 of 4 models failed" in capsys.readouterr().err
    rows = summary(out)
    assert set(rows) == {"vision__studentnet", "small", "truncated", "old_opset"}
    for name in ("vision__studentnet", "small"):
        assert rows[name]["status"] == "ok" and rows[name]["steps_done"] == ["fold", "prune", "compress"]
        assert rows[name]["params_after"] < rows[name]["params_before"]
        assert (out / name / "03-compress.onnxz").is_file()
    assert rows["truncated"]["status"] == "failed" and "not an ONNX model" in rows["truncated"]["error"]
    assert rows["old_opset"]["status"] == "failed" and "opset" in rows["old_opset"]["error"]
    assert (out / "truncated" / "log.txt").is_file()
    table = list(csv.reader((out / "summary.csv").open()))
    assert table[0][0] == "name" and table[-1][0] == "TOTAL" and len(table) == 6
    assert "| vision__studentnet | ok |" in (out / "summary.md").read_text()
    assert not (out / ".work").exists()


def test_zoo_manifests_yaml_and_csv_with_overrides(tmp_path):
    import onnx

    onnx.save(small_cnn(), tmp_path / "a.onnx")
    recipe = recipe_file(tmp_path, "steps:\n  - prune: {ratio: 0.25, target: none}\n")  # exact counts: 8 channels
    (tmp_path / "zoo.yaml").write_text(
        "models:\n"
        "  - {path: a.onnx, name: quarter, input_shapes: {x: [1, 3, 8, 8]}}\n"
        "  - {path: a.onnx, name: half, overrides: {prune: {ratio: 0.5}}}\n")
    out = tmp_path / "out"
    assert main(["zoo", str(tmp_path / "zoo.yaml"), "-o", str(out), "--recipe", str(recipe)]) == 0
    rows = summary(out)
    assert rows["half"]["params_after"] < rows["quarter"]["params_after"] < rows["quarter"]["params_before"]
    (tmp_path / "zoo.csv").write_text('path,input_shapes,overrides\na.onnx,x=2x3x8x8,"{prune: {ratio: 0.5}}"\n')
    out2 = tmp_path / "out2"
    assert main(["zoo", str(tmp_path / "zoo.csv"), "-o", str(out2), "--recipe", str(recipe)]) == 0
    (row,) = summary(out2).values()
    assert row["params_after"] == rows["half"]["params_after"]
    assert row["macs_before"] == 2 * rows["half"]["macs_before"]            # batch 2 from input_shapes
    (tmp_path / "bad.yaml").write_text("models:\n  - {path: a.onnx, overrides: {emit: {target: cpu}}}\n")
    assert main(["zoo", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "o3"), "--recipe", str(recipe)]) == 2


def test_zoo_timeout_and_memory_cap(tmp_path):
    import onnx

    (tmp_path / "zoo").mkdir()
    onnx.save(small_cnn(), tmp_path / "zoo" / "a.onnx")
    slow = recipe_file(tmp_path, "steps:\n  - bench: {seconds: 30}\n")
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(["zoo", str(tmp_path / "zoo"), "-o", str(out), "--recipe", str(slow), "--timeout", "3"]) == 9
    assert time.monotonic() - start < 25
    row = summary(out)["a"]
    assert row["status"] == "timeout" and "timed out after 3 s" in row["error"]
    assert json.loads((out / "a" / "result.json").read_text())["status"] == "timeout"
    assert (out / "a" / "log.txt").read_text().startswith("$ onnxprune")        # what it did until killed
    assert main(["zoo", str(tmp_path / "zoo"), "-o", str(out), "--memory-limit", "100"]) == 9
    row = summary(out)["a"]
    assert row["status"] == "failed" and ("out of memory" in row["error"] or "worker" in row["error"])


@pytest.mark.long
def test_interrupted_zoo_resumes(tmp_path):
    import onnx

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for i in range(3):
        onnx.save(small_cnn(seed=i), zoo / f"m{i}.onnx")
    recipe = recipe_file(tmp_path, "steps:\n  - fold\n  - bench: {seconds: 2}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "onnxprune", "zoo", str(zoo), "-o", str(out), "--recipe", str(recipe)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **INTERRUPTIBLE)
    deadline = time.monotonic() + 120
    while not (out / "m0" / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    rows = summary(out)
    assert rows["m0"]["status"] == "ok" and "not run" in {r["status"] for r in rows.values()}
    assert not (out / ".work").exists()
    assert main(["zoo", str(zoo), "-o", str(out), "--recipe", str(recipe), "--resume"]) == 0
    rows = summary(out)
    assert rows["m0"]["status"] == "resumed" and {rows["m1"]["status"], rows["m2"]["status"]} <= {"ok", "resumed"}
    changed = recipe_file(tmp_path, "steps:\n  - fold\n")
    assert main(["zoo", str(zoo), "-o", str(out), "--recipe", str(changed), "--resume"]) == 0
    assert {r["status"] for r in summary(out).values()} == {"ok"}                # a new recipe reruns all


# --- zoo, Ray ------------------------------------------------------------------------------------------------

@pytest.mark.long
def test_ray_backend_gives_the_same_summary(zoo, tmp_path):
    """On a Ray cluster the user runs (here one the test starts): the same per-model results as local."""
    import ray  # a declared dev dependency (onnxprune[ray]): missing must fail, not skip
    recipe = str(recipe_file(tmp_path))
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["zoo", str(zoo), "-o", str(local), "--recipe", recipe, "--jobs", "2"]) == 9
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        address = ray.get_runtime_context().gcs_address
        assert main(["zoo", str(zoo), "-o", str(remote), "--recipe", recipe, "--jobs", "2", "--backend", "ray",
                     "--address", address]) == 9
    finally:
        ray.shutdown()
    a, b = summary(local), summary(remote)
    assert a.keys() == b.keys()
    same = ("status", "error", "steps_done", "macs_before", "macs_after", "params_before", "params_after",
            "bytes_after", "compressed_bytes", "key")
    for name in a:
        assert {k: a[name][k] for k in same} == {k: b[name][k] for k in same}, name
    assert json.loads((remote / "summary.json").read_text())["totals"]["backend"] == "ray"


def test_ray_backend_never_starts_a_ray_of_its_own(zoo, tmp_path, capsys):
    """A run-local Ray listens on every interface without authentication: onnxprune refuses to start one."""
    assert main(["zoo", str(zoo), "-o", str(tmp_path / "out"), "--backend", "ray"]) == 2
    assert "--address" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.long
def test_recipe_prunes_with_the_previous_sensitivity_run(tmp_path):
    recipe = recipe_file(tmp_path, f"data: {DIGITS / 'digits_calib.npz'}\nsteps:\n  - fold\n"
                                   "  - sensitivity: {limit: 32, target-flops: 0.7}\n"
                                   "  - prune: {sensitivity: previous, recover: lsq, limit: 32}\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), str(DIGITS / "vgg16_bn.onnx"), "-o", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps_done"] == ["fold", "sensitivity", "prune"] and (out / "02-sensitivity").is_dir()
    assert "--sensitivity" in (out / "log.txt").read_text() and result["macs_after"] <= 0.71 * result["macs_before"]
    early = recipe_file(tmp_path, "steps:\n  - prune: {sensitivity: previous}\n")
    assert main(["run", str(early), str(DIGITS / "vgg16_bn.onnx"), "-o", str(tmp_path / "o2")]) == 2  # at load
    assert not (tmp_path / "o2").exists()


def test_run_zoo_from_a_script_without_a_main_guard(tmp_path):
    """Spawned workers do not run the calling script again, so a script needs no `if __name__ == "__main__":`."""
    import subprocess
    import sys

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(DIGITS / "studentnet.onnx", zoo / "m.onnx")
    script = tmp_path / "script.py"
    script.write_text("import json\nfrom pathlib import Path\nfrom onnxprune.recipe import parse_recipe\n"
                      "from onnxprune.zoo import ZooOptions, discover, run_zoo\n"
                      f"jobs = discover({str(zoo)!r}, parse_recipe('steps: [fold]'))\n"
                      f"run = run_zoo(jobs, Path({str(tmp_path / 'out')!r}), ZooOptions(jobs=2))\n"
                      "print(json.dumps(run.totals))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] == 1


def test_recipe_eval_data_reaches_prune_and_bench(tmp_path):
    """Held-out data: prune reports on it, bench measures on it, the calibration set only fits."""
    recipe = recipe_file(tmp_path, f"data: {DIGITS / 'digits_calib.npz'}\neval-data: {DIGITS / 'digits_test.npz'}\n"
                                   "steps:\n  - prune: {ratio: 0.3, recover: lsq, limit: 32}\n  - bench: {runs: 3}\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), str(DIGITS / "studentnet.onnx"), "-o", str(out)]) == 0
    quality = json.loads((out / "01-prune.json").read_text())["quality"]
    assert quality["data"] == "eval" and quality["samples"] == 32
    bench = json.loads((out / "02-bench.json").read_text())
    assert str(DIGITS / "digits_test.npz") in json.dumps(bench["environment"])
    assert all(r["accuracy"] is not None for r in bench["results"])     # digits_test has labels


def test_recipe_requirements_fail_before_any_step_runs(tmp_path, capsys):
    model = str(DIGITS / "studentnet.onnx")
    no_data = recipe_file(tmp_path, "steps:\n  - fold\n  - prune: {ratio: 0.3, recover: lsq}\n")
    assert main(["run", str(no_data), model, "-o", str(tmp_path / "a")]) == 2
    assert "steps[1].prune: needs data (recover lsq)" in capsys.readouterr().err
    previous = recipe_file(tmp_path, f"data: {DIGITS / 'digits_calib.npz'}\nsteps:\n"
                                     "  - prune: {sensitivity: previous}\n  - sensitivity: {limit: 8}\n")
    assert main(["run", str(previous), model, "-o", str(tmp_path / "b")]) == 2
    assert "no sensitivity step comes before it" in capsys.readouterr().err
    mobile = recipe_file(tmp_path, "steps:\n  - fold\n  - prune: {ratio: 0.3}\n  - emit: {target: [cpu, mobile]}\n")
    assert main(["run", str(mobile), model, "-o", str(tmp_path / "c")]) == 2
    assert "--target mobile needs fixed input shapes" in capsys.readouterr().err
    assert not any((tmp_path / x).exists() for x in "abc")
    assert main(["run", str(mobile), model, "-o", str(tmp_path / "c"), "--input-shape", "input=1x3x32x32"]) == 0
