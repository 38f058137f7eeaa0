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
