"""Long work is visible: a line per stage when not on a terminal (logs, CI), nothing with --quiet, and piped
output is not cut at 80 columns."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnxprune.progress import Reporter, reporting, stage

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
CALIB = DIGITS / "digits_calib.npz"


def test_line_mode_prints_outer_stages_and_notes_only():
    out = io.StringIO()
    with reporting(Reporter(out, live=False)):
        with stage("outer", total=2, unit="items") as s:
            with stage("inner", total=5):
                pass
            s.advance("a")
            s.note("a is done")
            s.advance("b")
        with pytest.raises(ValueError), stage("broken", total=1):
            raise ValueError
    lines = out.getvalue().splitlines()
    assert lines[0] == "onnxprune: outer: 2 items" and lines[1] == "onnxprune: a is done"
    assert lines[2].startswith("onnxprune: outer: done, 2 items in ") and lines[3] == "onnxprune: broken: 1 steps"
    assert len(lines) == 4                                # no line for the inner stage, no "done" for a failure


def test_silent_without_a_reporter(capsys):
    with stage("anything", total=3) as s:
        s.advance()
        s.note("nothing")
    assert capsys.readouterr() == ("", "")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.long
def test_long_commands_print_a_line_per_stage_when_piped(tmp_path):
    student = str(DIGITS / "studentnet.onnx")
    prune = cli("prune", student, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--recover", "lsq", "--data",
                str(CALIB), "--limit", "32", "--schedule", "iterative", "--steps", "2")
    assert prune.returncode == 0, prune.stderr
    err = prune.stderr.splitlines()
    assert "onnxprune: schedule iterative: 2 rounds" in err
    assert any(line.startswith("onnxprune: schedule iterative: done, 2 rounds in ") for line in err)
    assert any(line.startswith("onnxprune: recover (lsq) on 32 samples: done, ") for line in err)
    sens = cli("sensitivity", student, "--data", str(CALIB), "--limit", "16", "--ratios", "0.5", "-o",
               str(tmp_path / "s"))
    assert sens.returncode == 0 and "onnxprune: sensitivity: 1 ratios on 16 samples: " in sens.stderr
    comp = cli("compress", student, "-o", str(tmp_path / "c.onnxz"), "--tolerance", "0.01", "--data", str(CALIB),
               "--limit", "16")
    assert comp.returncode == 0, comp.stderr
    assert "onnxprune: layer sensitivity: " in comp.stderr and "onnxprune: refit (lsq) and share on 16 " in comp.stderr
    quiet = cli("prune", student, "-o", str(tmp_path / "q.onnx"), "--ratio", "0.3", "--recover", "lsq", "--data",
                str(CALIB), "--limit", "32", "--quiet")
    assert quiet.returncode == 0 and "onnxprune: recover" not in quiet.stderr


def test_run_and_zoo_report_each_step_and_model(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - fold\n  - prune: {ratio: 0.25}\n")
    run = cli("run", str(recipe), str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr
    assert "onnxprune: r: step 01-fold done in " in run.stderr and "onnxprune: r: step 02-prune done in " in run.stderr
    zoo = cli("zoo", str(DIGITS), "-o", str(tmp_path / "z"), "--recipe", str(recipe))
    assert zoo.returncode == 0, zoo.stderr
    lines = zoo.stderr.splitlines()
    assert lines[0] == "onnxprune: zoo: 3 models" and sum("] " in x and ": ok (" in x for x in lines) == 3
    summary = [x for x in zoo.stdout.splitlines() if x.startswith("3 models:")]
    assert len(summary) == 1 and summary[0].endswith("summary.md")    # one line, not cut at 80 columns
