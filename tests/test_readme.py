"""The documentation's examples run as written: the Python API example (on small stand-ins for its files, as a
script without a main guard, from a fresh folder) and the recipe example; every link in README.md and docs/
resolves inside the repository (files and heading anchors), and README stays a first screen (<= 12 KB)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_block(path: Path) -> str:
    return re.search(r"```python\n(.*?)```", path.read_text(), re.DOTALL).group(1)


@pytest.mark.long
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
    script.write_text(python_block(ROOT / "docs" / "api.md"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "model.folded.onnx").is_file() and (tmp_path / "dist" / "cpu" / "manifest.json").is_file()
    assert (tmp_path / "model.onnxz").is_file() and (tmp_path / "out" / "summary.json").is_file()
    assert (tmp_path / "mine.onnx").is_file()


@pytest.mark.long
def test_recipe_example_runs_as_written(tmp_path, monkeypatch):
    """The README's recipe and its 'On the bundled model' command, run as written (output folder aside)."""
    import shlex

    from onnxprune.cli.main import main

    text = (ROOT / "docs" / "cli.md").read_text()
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


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip("#").strip().lower())   # a link: its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert ROOT in file.parents or file == ROOT, f"{doc.name}: {target} points outside the repository"
        assert file.exists(), f"{doc.name}: {target}: no such file"
        if anchor and file.suffix == ".md":
            lines = file.read_text().splitlines()
            anchors = {slug(line) for line in lines if line.startswith("#")} | \
                {a for line in lines for a in re.findall(r'<a id="([^"]+)"></a>', line)}
            assert anchor in anchors, f"{doc.name}: {target}: no such heading"


def test_readme_is_a_first_screen():
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024
