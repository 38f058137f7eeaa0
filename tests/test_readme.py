"""The README's Python API example runs as written (on small stand-ins for its files), as a script without a
main guard, from a fresh folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"


def readme_block(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    part = text[text.index(f"## {section}"):]
    return re.search(r"```python\n(.*?)```", part, re.DOTALL).group(1)


def test_python_api_example_runs_as_written(tmp_path):
    from PIL import Image

    shutil.copy(DIGITS / "studentnet.onnx", tmp_path / "model.onnx")
    shutil.copy(DIGITS / "digits_calib.npz", tmp_path / "calib.npz")
    images = tmp_path / "calib_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (tmp_path / "zoo").mkdir()
    shutil.copy(DIGITS / "studentnet.onnx", tmp_path / "zoo" / "a.onnx")
    (tmp_path / "recipe.yaml").write_text("steps:\n  - fold\n  - prune: {ratio: 0.25}\n")
    script = tmp_path / "example.py"
    script.write_text(readme_block("Python API"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "model.folded.onnx").is_file() and (tmp_path / "dist" / "cpu" / "manifest.json").is_file()
    assert (tmp_path / "model.onnxz").is_file() and (tmp_path / "out" / "summary.json").is_file()
    assert (tmp_path / "mine.onnx").is_file()


def test_recipe_example_runs_as_written(tmp_path, monkeypatch):
    """The README's recipe and its 'On the bundled model' command, run as written (output folder aside)."""
    import shlex

    from onnxprune.cli.main import main

    text = (ROOT / "README.md").read_text()
    part = text[text.index("A **recipe** (YAML)"):]
    (tmp_path / "recipe.yaml").write_text(re.search(r"```yaml\n(.*?)```", part, re.DOTALL).group(1))
    command = " ".join(re.search(r"On the bundled model: `(onnxprune run .*?)`", part, re.DOTALL).group(1).split())
    argv = shlex.split(command)[1:]
    argv[argv.index("recipe.yaml")] = str(tmp_path / "recipe.yaml")
    out = tmp_path / "run"
    argv[argv.index("-o") + 1] = str(out)
    monkeypatch.chdir(ROOT)
    assert main(argv + ["-q"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"01-fold.onnx", "02-prune.onnx", "03-compress.onnxz", "04-emit-cpu", "04-emit-mobile", "05-bench.json",
            "log.txt", "result.json"} <= names, names
