"""onnxprune never destroys or leaks a user's files: inputs are never outputs, --force replaces only what
onnxprune wrote, nothing is written outside -o (not even into the current folder), SIGTERM cleans up like
Ctrl-C, and files get the user's umask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from onnxprune.cli.main import main
from onnxprune.errors import OutputPathError, UsageError
from onnxprune.paths import MARKER
from onnxprune.zoo.outdir import locked_outdir
from tests.graphs import conv_bn
from tests.processes import INTERRUPTIBLE

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
CALIB = DIGITS / "digits_calib.npz"


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def spawn(*args: str, cwd: Path | None = None, umask: int | None = None) -> subprocess.Popen[str]:
    def setup() -> None:
        INTERRUPTIBLE["preexec_fn"]()                 # SIGINT as in a terminal, even under a background run
        if umask is not None:
            os.umask(umask)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "onnxprune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, preexec_fn=setup)  # noqa: PLW1509


def cli(*args: str, cwd: Path | None = None, umask: int | None = None, timeout: float = 300) -> tuple[int, str]:
    proc = spawn(*args, cwd=cwd, umask=umask)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A user's folder: a model, its calibration data and a file of their own."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(DIGITS / "studentnet.onnx", proj / "model.onnx")
    shutil.copy(CALIB, proj / "calib.npz")
    (proj / "notes.txt").write_text("mine")
    return proj


# --- an output folder never holds an input ---------------------------------------------------------------------

@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("command", ["emit", "sensitivity", "run"])
def test_output_folder_holding_the_input_is_refused(project, tmp_path, capsys, command, force):
    before = snapshot(project)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - fold\n")
    args = {"emit": ["emit", str(project / "model.onnx"), "--target", "cpu", "-o", str(project)],
            "sensitivity": ["sensitivity", str(project / "model.onnx"), "--data", str(project / "calib.npz"),
                            "-o", str(project), "--limit", "8"],
            "run": ["run", str(recipe), str(project / "model.onnx"), "-o", str(project)]}[command]
    args += ["--force"] if force and command != "run" else []
    assert main(args) == OutputPathError.exit_code
    assert "contains the input" in capsys.readouterr().err
    assert snapshot(project) == before
    assert main(args[:-2 if force and command != "run" else len(args)][:args.index("-o")]
                + ["-o", str(tmp_path)] + ([] if command == "run" else args[args.index("-o") + 2:])) \
        == OutputPathError.exit_code                                   # a folder above the input: the same


def test_run_replaces_only_its_own_folder(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - fold\n")
    model = DIGITS / "studentnet.onnx"
    out = tmp_path / "out"
    assert main(["run", str(recipe), str(model), "-o", str(out)]) == 0
    assert (out / MARKER).is_file() and (out / "01-fold.onnx").is_file()
    assert main(["run", str(recipe), str(model), "-o", str(out)]) == 0        # onnxprune's: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml"]    # nothing left beside it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert main(["run", str(recipe), str(model), "-o", str(mine)]) == OutputPathError.exit_code
    assert "not written by onnxprune" in capsys.readouterr().err and (mine / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("case", ["data_as_output", "report_as_output", "plan_out_as_plan", "runnable_as_output",
                                  "bench_json_as_model", "decompress_over_container", "output_in_data_folder"])
def test_no_input_is_an_output_and_no_two_outputs_collide(project, tmp_path, capsys, case):
    m, data = str(project / "model.onnx"), str(project / "calib.npz")
    plan = tmp_path / "plan.json"
    assert main(["prune", m, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.25", "--plan-out", str(plan)]) == 0
    assert main(["compress", m, "-o", str(tmp_path / "c.onnxz"), "--sparsity", "0.5"]) == 0
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    before = {**snapshot(project), **{str(p): p.read_bytes() for p in (plan, tmp_path / "c.onnxz")}}
    capsys.readouterr()
    args = {"data_as_output": ["prune", m, "-o", data, "--data", data, "--ratio", "0.25"],
            "report_as_output": ["prune", m, "-o", str(tmp_path / "x.onnx"), "--report", str(tmp_path / "x.onnx")],
            "plan_out_as_plan": ["prune", m, "-o", str(tmp_path / "y.onnx"), "--plan", str(plan), "--plan-out",
                                 str(plan)],
            "runnable_as_output": ["compress", m, "-o", str(tmp_path / "z.onnx"), "--runnable",
                                   str(tmp_path / "z.onnx")],
            "bench_json_as_model": ["bench", m, "--runs", "2", "--json", m],
            "decompress_over_container": ["decompress", str(tmp_path / "c.onnxz"), "-o", str(tmp_path / "c.onnxz")],
            "output_in_data_folder": ["prune", m, "-o", str(images / "a" / "out.onnx"), "--data", str(images)]}[case]
    assert main(args) == OutputPathError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("input" in err or "same path" in err), err
    assert {**snapshot(project), **{str(p): p.read_bytes() for p in (plan, tmp_path / "c.onnxz")}} == before
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "z.onnx").exists()


def test_emit_into_the_current_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, err = cli("emit", str(DIGITS / "studentnet.onnx"), "--target", "cpu", "-o", ".", "--force", cwd=tmp_path)
    assert code == OutputPathError.exit_code and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_symlinked_output_folder_is_replaced_through_the_link(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    src = str(DIGITS / "studentnet.onnx")
    assert main(["emit", src, "--target", "cpu", "-o", str(real)]) == 0
    link.symlink_to(real)
    assert main(["emit", src, "--target", "cpu", "-o", str(link), "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]     # no .real.xxx.old left behind
    assert link.is_symlink() and (link / "manifest.json").is_file()


@pytest.mark.parametrize("command", ["emit", "sensitivity", "zoo", "fold"])
def test_unwritable_output_is_one_line(tmp_path, monkeypatch, capsys, command):
    """A read-only destination (simulated: the tests may run as root, which ignores permissions)."""
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    for target in (tempfile, os):
        monkeypatch.setattr(target, "mkdtemp" if target is tempfile else "mkdir", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    src = str(DIGITS / "studentnet.onnx")
    args = {"emit": ["emit", src, "--target", "cpu", "-o", str(tmp_path / "out")],
            "sensitivity": ["sensitivity", src, "--data", str(CALIB), "--limit", "8", "-o", str(tmp_path / "out")],
            "zoo": ["zoo", str(DIGITS), "-o", str(tmp_path / "out")],
            "fold": ["fold", src, "-o", str(tmp_path / "out.onnx")]}[command]
    assert main(args) == OutputPathError.exit_code
    err = capsys.readouterr().err.strip()
    assert "Permission denied" in err and len(err.splitlines()) == 1 and "internal error" not in err


# --- zoo -------------------------------------------------------------------------------------------------------

def small_zoo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(conv_bn(), root / "a.onnx")
    return root


@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "../other_out/victim", "..", ".hidden"])
def test_manifest_names_stay_inside_outdir(tmp_path, name):
    zoo = small_zoo(tmp_path / "zoo")
    manifest = zoo / "m.yaml"
    manifest.write_text(json.dumps({"models": [{"path": "a.onnx", "name": name}]}))
    victim = tmp_path / "other_out" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    assert main(["zoo", str(manifest), "-o", str(out)]) == 0
    assert (victim / "keep.txt").read_text() == "mine" and not (tmp_path / "escaped").exists()
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1 and not folders[0].name.startswith(".") and (folders[0] / "result.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_out", "out", "zoo"]


@pytest.mark.parametrize("override", ["fold: {dump-dir: /tmp/x}", "prune: {plan-out: /tmp/x.json}",
                                      "compress: {runnable: /tmp/x.onnx}"])
def test_manifest_overrides_cannot_name_output_paths(tmp_path, capsys, override):
    zoo = small_zoo(tmp_path / "zoo")
    step = override.split(":")[0]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"steps:\n  - {step}\n")
    manifest = zoo / "m.yaml"
    manifest.write_text(f"models:\n  - path: a.onnx\n    overrides: {{{override}}}\n")
    assert main(["zoo", str(manifest), "-o", str(tmp_path / "out"), "--recipe", str(recipe)]) == UsageError.exit_code
    assert "not a path" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_recipe_output_options_land_in_the_model_folder(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - fold: {dump-dir: true}\n  - prune: {ratio: 0.25, plan-out: true}\n"
                      "  - compress: {sparsity: 0.5, runnable: true}\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), str(DIGITS / "studentnet.onnx"), "-o", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"01-fold.dump", "02-prune.plan.json", "03-compress.small.onnx"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml"]


def test_outdir_inside_the_input_folder_is_not_reingested(tmp_path):
    zoo = small_zoo(tmp_path / "zoo")
    out = zoo / "out"
    for _ in range(3):
        assert main(["zoo", str(zoo), "-o", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["totals"]["models"] == 1


def test_zoo_refuses_a_folder_it_did_not_write_and_keeps_users_work_folder(tmp_path, capsys):
    zoo = small_zoo(tmp_path / "zoo")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my summary")
    assert main(["zoo", str(zoo), "-o", str(mine)]) == OutputPathError.exit_code
    assert "not written by onnxprune" in capsys.readouterr().err and (mine / "summary.md").read_text() == "my summary"
    out = tmp_path / "out"
    assert main(["zoo", str(zoo), "-o", str(out)]) == 0
    (out / ".work").mkdir()
    (out / ".work" / "keep.txt").write_text("mine")
    (out / "a" / MARKER).unlink()                                     # a model folder the user took over
    (out / "a" / "mine.txt").write_text("mine")
    assert main(["zoo", str(zoo), "-o", str(out)]) == 9
    assert (out / ".work" / "keep.txt").read_text() == "mine" and (out / "a" / "mine.txt").read_text() == "mine"
    assert "not written by onnxprune" in json.loads((out / "summary.json").read_text())["models"][0]["error"]


def test_second_zoo_run_into_the_same_outdir_stops_at_once(tmp_path, capsys):
    zoo = small_zoo(tmp_path / "zoo")
    out = tmp_path / "out"
    with locked_outdir(out):                  # a first run holding OUTDIR
        (out / "in-progress").mkdir()
        assert main(["zoo", str(zoo), "-o", str(out), "--resume"]) == OutputPathError.exit_code
        assert "another onnxprune zoo run" in capsys.readouterr().err
        assert (out / "in-progress").is_dir() and not (out / "summary.json").exists()


# --- signals ---------------------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


@pytest.mark.parametrize("command", ["emit", "sensitivity"])
def test_sigterm_leaves_no_partial_output(tmp_path, command):
    out = tmp_path / "out"
    args = {"emit": ["emit", str(DIGITS / "resnet56.onnx"), "--target", "cpu", "--int8", "static", "--data",
                     str(CALIB), "-o", str(out)],
            "sensitivity": ["sensitivity", str(DIGITS / "vgg16_bn.onnx"), "--data", str(CALIB), "-o", str(out)]}
    proc = spawn(*args[command])
    wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "SIGTERM" in err
    assert list(tmp_path.iterdir()) == []


DEFERRED = """
import os, signal, sys
from onnxprune.signals import Terminated, signals_deferred, termination_as_interrupt
reached = []
try:
    with termination_as_interrupt():
        with signals_deferred():
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))
            import torch  # a C extension whose import an interrupt would abort
            reached.append(torch.zeros(2).shape[0])
        reached.append("after")
except KeyboardInterrupt as e:
    print(reached, type(e).__name__, getattr(e, "signum", None))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_during_a_deferred_import_is_delivered_after_it(sig):
    """emit lazily imports onnxruntime.quantization, which imports torch: a SIGTERM raised inside torch's
    import aborted the process (temp folder left) or was swallowed (exit 0, signal ignored)."""
    got = subprocess.run([sys.executable, "-c", DEFERRED, sig], check=False, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, **INTERRUPTIBLE)
    signum = getattr(signal, sig)
    expected = "Terminated" if sig != "SIGINT" else "KeyboardInterrupt"
    assert got.returncode == 0 and got.stdout.split() == ["[2]", expected,
                                                          str(int(signum)) if sig != "SIGINT" else "None"], got


def zoo_with_busy_workers(tmp_path: Path, models: int) -> tuple[subprocess.Popen[str], Path, list[int]]:
    """A zoo run (2 workers, a sensitivity step of several seconds per model), once both workers are busy."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for i in range(models):
        shutil.copy(DIGITS / "vgg16_bn.onnx", zoo / f"m{i}.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {CALIB}\nsteps:\n  - sensitivity: {{limit: 256}}\n")
    out = tmp_path / "out"
    proc = spawn("zoo", str(zoo), "-o", str(out), "--recipe", str(recipe), "--jobs", "2")
    work = out / ".onnxprune-work"
    wait_for(lambda: (work.is_dir() and len(list(work.iterdir())) >= 2) or proc.poll() is not None)
    workers = children(proc.pid)
    assert proc.poll() is None and workers
    return proc, out, workers


def test_sigterm_stops_zoo_workers_and_writes_the_summary(tmp_path):
    proc, out, workers = zoo_with_busy_workers(tmp_path, 3)
    work = out / ".onnxprune-work"
    proc.send_signal(signal.SIGTERM)                      # the parent only, as Kubernetes does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    wait_for(lambda: not any(alive(w) for w in workers), timeout=15)
    rows = json.loads((out / "summary.json").read_text())["models"]
    assert len(rows) == 3 and {r["status"] for r in rows} <= {"not run", "ok"}
    assert not work.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) >= ["summary.csv", "summary.json",
                                                                                  "summary.md"]


def test_zoo_workers_die_with_a_killed_parent(tmp_path):
    """Even SIGKILL (no cleanup possible in the parent): the kernel ends the workers, so no orphan publishes."""
    proc, out, workers = zoo_with_busy_workers(tmp_path, 2)
    proc.kill()
    proc.communicate(timeout=60)
    wait_for(lambda: not any(alive(w) for w in workers), timeout=15)
    assert not any((out / f"m{i}").exists() for i in range(2))


# --- nothing written into the current folder, files with the user's umask ---------------------------------------

@pytest.mark.long
def test_every_command_leaves_the_current_folder_empty(tmp_path):
    """ORT's quantization pre-processing writes sym_shape_infer_temp.onnx (and a <uuid>.data) into the cwd for
    the exported CIFAR ResNet-56 (its symbolic shape inference gives up), following a symlink planted under that
    name: every command runs from an empty folder here."""
    from models.zoo_cache import zoo_model

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (cwd / "sym_shape_infer_temp.onnx").symlink_to(victim)
    o = tmp_path / "o"
    o.mkdir()
    m56, student = str(DIGITS / "resnet56.onnx"), str(DIGITS / "studentnet.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - fold\n  - prune: {ratio: 0.25}\n")
    commands = [
        ["inspect", m56],
        ["fold", m56, "-o", str(o / "f.onnx"), "--verify"],
        ["prune", student, "-o", str(o / "p.onnx"), "--ratio", "0.25", "--report", str(o / "p.json"),
         "--plan-out", str(o / "plan.json"), "--verify"],
        ["compress", student, "-o", str(o / "c.onnxz"), "--sparsity", "0.5", "--runnable", str(o / "c.onnx")],
        ["decompress", str(o / "c.onnxz"), "-o", str(o / "d.onnx")],
        ["profile", student, "-o", str(o / "t.json"), "--cache", str(o / "cache")],
        ["sensitivity", student, "--data", str(CALIB), "--limit", "16", "--ratios", "0.5", "-o", str(o / "s")],
        ["emit", str(zoo_model("resnet56", "legacy")), "--target", "cpu", "--int8", "dynamic", "-o", str(o / "e")],
        ["bench", student, str(o / "p.onnx"), "--runs", "3", "--json", str(o / "b.json")],
        ["run", str(recipe), student, "-o", str(o / "r")],
        ["zoo", str(DIGITS), "-o", str(o / "z")],
    ]
    for args in commands:
        code, err = cli(*args, cwd=cwd)
        assert code == 0, (args, err)
        assert os.listdir(cwd) == ["sym_shape_infer_temp.onnx"], (args, os.listdir(cwd))
    assert victim.read_text() == "precious"


@pytest.mark.long
def test_files_get_the_users_umask(tmp_path):
    student = str(DIGITS / "studentnet.onnx")
    for args in (["prune", student, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.25", "--report",
                  str(tmp_path / "p.json"), "--plan-out", str(tmp_path / "plan.json")],
                 ["compress", student, "-o", str(tmp_path / "c.onnxz"), "--sparsity", "0.5"],
                 ["fold", str(DIGITS / "resnet56.onnx"), "-o", str(tmp_path / "f.onnx"), "--external-data", "yes"],
                 ["zoo", str(DIGITS), "-o", str(tmp_path / "z")]):
        assert cli(*args, umask=0o022)[0] == 0, args
    for p in tmp_path.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


def test_another_zoo_outdir_inside_the_input_is_skipped_but_can_be_the_input(tmp_path):
    zoo = small_zoo(tmp_path / "zoo")
    assert main(["zoo", str(zoo), "-o", str(zoo / "out1")]) == 0
    assert main(["zoo", str(zoo), "-o", str(zoo / "out2")]) == 0      # out1's outputs are not models to rewrite
    assert json.loads((zoo / "out2" / "summary.json").read_text())["totals"]["models"] == 1
    assert main(["zoo", str(zoo / "out1"), "-o", str(tmp_path / "chained")]) == 0   # on purpose: read
    assert json.loads((tmp_path / "chained" / "summary.json").read_text())["totals"]["models"] == 1
