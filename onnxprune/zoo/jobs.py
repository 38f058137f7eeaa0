"""What a zoo run works on: models found in a folder, or listed in a manifest (YAML or CSV).

Manifest YAML::

    models:
      - path: resnet50.onnx                 # relative to the manifest
        input_shapes: {input: [1, 3, 224, 224]}
        data: calib/                        # --data for this model's steps
        eval_data: heldout/                 # --eval-data (and what bench measures on)
        overrides: {prune: {target-flops: 0.5}}

Manifest CSV: columns ``path`` (required), ``input_shapes`` (``input=1x3x224x224;other=1x10``), ``data``, ``eval_data``,
``overrides`` (YAML/JSON inline, e.g. ``{prune: {target-flops: 0.5}}``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxprune
from onnxprune.errors import InputFileError, OutputPathError, UsageError
from onnxprune.paths import marked_by, read_regular_file
from onnxprune.recipe import Recipe, RecipeError, load_yaml

#: Where a zoo builds models before publishing them (under OUTDIR; only ever holds onnxprune's own folders).
WORK_FOLDER = ".onnxprune-work"


class ManifestError(UsageError):
    """The zoo manifest is unreadable or malformed (the message names the entry and key)."""


@dataclass(frozen=True)
class ModelJob:
    name: str                                          # unique; the model's folder under OUTDIR
    path: str
    recipe: Recipe                                     # with this model's overrides and data
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def key(self) -> str:
        """Same key = same outputs: the model bytes, the recipe, the input shapes and the onnxprune version."""
        h = hashlib.sha256()
        try:
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"unreadable")
        h.update(self.recipe.fingerprint().encode())
        h.update(repr(self.input_shapes).encode())
        h.update(onnxprune.__version__.encode())
        return h.hexdigest()


#: Names a model folder may not take (the run's own files in OUTDIR).
RESERVED_NAMES = {"summary.csv", "summary.md", "summary.json"}


def safe_name(text: str) -> str:
    """A model's folder name: one path component of ``[A-Za-z0-9._-]``, not hidden (no leading dot), so no
    name (``../x``, ``/abs``, ``..``) can reach outside OUTDIR or collide with its own files."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "__").replace("\\", "__")).lstrip(".")
    if not name:
        name = "model"
    return f"{name}_" if name in RESERVED_NAMES else name


def _name_for(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return safe_name(str(rel.with_suffix("")))


def _shapes(value: Any, where: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            name, _, dims = part.partition("=")
            pairs[name.strip()] = dims.strip().split("x")
        value = pairs
    if not isinstance(value, dict):
        raise ManifestError(f"{where}.input_shapes: expected {{name: [dims]}} or 'name=1x3x224x224;...'")
    try:
        return tuple((str(k), tuple(int(d) for d in v)) for k, v in value.items())
    except (TypeError, ValueError):
        raise ManifestError(f"{where}.input_shapes: dims must be integers") from None


def _skipped(path: Path, root: Path, exclude: Path | None) -> bool:
    """Whether discovery skips ``path``: inside the run's OUTDIR, another zoo run's OUTDIR below ``root``, or a
    work area, so a zoo never ingests its own outputs. (A zoo OUTDIR given as the input itself is read.)"""
    real = Path(os.path.realpath(path))
    if exclude is not None and real.is_relative_to(exclude):
        return True
    folder = path.parent
    while folder != root and folder != folder.parent:
        if folder.name == WORK_FOLDER or marked_by(folder) == "zoo":
            return True
        folder = folder.parent
    return False


def discover(source: str | Path, recipe: Recipe, exclude: str | Path | None = None) -> list[ModelJob]:
    """Jobs for a folder (every ``*.onnx`` below it, sorted) or a manifest file (.yaml/.yml/.csv). ``exclude``
    (the run's OUTDIR) and folders onnxprune wrote are skipped in a folder."""
    src = Path(source)
    skip = Path(os.path.realpath(exclude)) if exclude is not None else None
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*.onnx") if p.is_file() and not _skipped(p, src, skip))
        if not paths:
            raise InputFileError(f"{src}: no .onnx files found")
        return _unique([ModelJob(_name_for(p, src), str(p), recipe) for p in paths])
    if not src.is_file():
        raise InputFileError(f"{src}: no such file or folder")
    if src.suffix.lower() in (".yaml", ".yml"):
        entries = _yaml_entries(src)
    elif src.suffix.lower() == ".csv":
        entries = _csv_entries(src)
    else:
        raise ManifestError(f"{src}: expected a folder, or a manifest ending in .yaml, .yml or .csv")
    jobs = []
    for i, entry in enumerate(entries):
        where = f"{src}: models[{i}]"
        if not isinstance(entry, dict) or not entry.get("path"):
            raise ManifestError(f"{where}: each entry needs a 'path'")
        unknown = set(entry) - {"path", "input_shapes", "data", "eval_data", "overrides", "name"}
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        path = (src.parent / str(entry["path"])).resolve() if not Path(str(entry["path"])).is_absolute() \
            else Path(str(entry["path"]))
        overrides = entry.get("overrides") or {}
        if isinstance(overrides, str):
            overrides = _inline_yaml(overrides, f"{where}.overrides")
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ManifestError(f"{where}.overrides: expected {{step: {{option: value}}}}")
        data, eval_data = (_relative_to(src, entry.get(k)) for k in ("data", "eval_data"))
        try:
            job_recipe = recipe.with_overrides(overrides, data, eval_data)
        except RecipeError as e:
            raise ManifestError(f"{where}: {e}") from None
        if entry.get("name") is not None and not isinstance(entry.get("name"), (str, int)):
            raise ManifestError(f"{where}.name: expected a string")
        name = safe_name(str(entry["name"])) if entry.get("name") else _name_for(path, src.parent)
        jobs.append(ModelJob(name, str(path), job_recipe, _shapes(entry.get("input_shapes"), where)))
    if not jobs:
        raise ManifestError(f"{src}: no models listed")
    return _unique(jobs)


def _relative_to(manifest: Path, value: Any) -> str | None:
    """A manifest path, relative to the manifest's folder unless absolute."""
    if not value:
        return None
    return str((manifest.parent / str(value)).resolve()) if not Path(str(value)).is_absolute() else str(value)


def _unique(jobs: list[ModelJob]) -> list[ModelJob]:
    seen: dict[str, int] = {}
    out = []
    for job in jobs:
        n = seen.get(job.name, 0)
        seen[job.name] = n + 1
        out.append(job if n == 0 else ModelJob(f"{job.name}-{n + 1}", job.path, job.recipe, job.input_shapes))
    return out


def _inline_yaml(text: str, where: str) -> Any:
    return load_yaml(text, where, ManifestError)


def _read(src: Path) -> bytes:
    try:
        return read_regular_file(src, "manifest")
    except InputFileError as e:
        raise ManifestError(f"cannot read the manifest: {e}") from None


def _yaml_entries(src: Path) -> list[Any]:
    raw = load_yaml(_read(src), str(src), ManifestError)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ManifestError(f"{src}: expected a mapping with a 'models' list")
    return raw["models"]


def _csv_entries(src: Path) -> list[dict[str, Any]]:
    try:
        text = _read(src).decode()
    except UnicodeDecodeError:
        raise ManifestError(f"{src}: not a text (UTF-8) file") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "path" not in reader.fieldnames:
        raise ManifestError(f"{src}: the CSV needs a 'path' column")
    return [{k: v for k, v in row.items() if k is not None and v not in (None, "")} for row in reader]


def check_zoo_paths(source: str | Path, recipe: str | Path | None, jobs: list[ModelJob], outdir: Path) -> None:
    """OUTDIR may lie inside the input folder (it is skipped), but must not hold any input: the input folder or
    manifest, the recipe, a model or its data."""
    out = Path(os.path.realpath(outdir))
    inputs = [("input", source), ("recipe", recipe)] + [(job.name, job.path) for job in jobs] + \
        [(f"{job.name} data", job.recipe.data) for job in jobs] + \
        [(f"{job.name} eval data", job.recipe.eval_data) for job in jobs]
    for what, path in inputs:
        if path is not None and Path(os.path.realpath(path)).is_relative_to(out):
            raise OutputPathError(f"{outdir}: output folder holds an input ({what}: {path}); choose a folder apart "
                                  f"from the inputs")
