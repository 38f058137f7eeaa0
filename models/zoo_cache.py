"""Exported zoo models for tests and benchmarks, cached on disk (keyed by torch version and the models/ sources).

Safe under pytest-xdist: each file is written to a temp name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS_SRC = ROOT / "models"


def _cache_dir() -> Path:
    h = hashlib.sha256(torch.__version__.encode())
    for src in sorted(MODELS_SRC.glob("*.py")):
        h.update(src.read_bytes())
    d = Path(os.environ.get("ONNXPRUNE_ZOO_CACHE", ROOT / ".zoo-cache")) / h.hexdigest()[:12]
    d.mkdir(parents=True, exist_ok=True)
    return d


def zoo_model(name: str, form: str) -> Path:
    """Path to ``name`` exported in ``form`` (exported on first use)."""
    from models.architectures import ZOO
    from models.export_zoo import export, save

    path = _cache_dir() / f"{name}.{form}.onnx"
    if not path.exists():
        proto = export(ZOO[name], form)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, suffix=".tmp"))
        try:
            save(proto, tmp / path.name, form)  # external data is named after the final file
            data = tmp / (path.name + ".data")
            if data.exists():
                os.replace(data, path.parent / data.name)
            os.replace(tmp / path.name, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
