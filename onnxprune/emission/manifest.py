"""``manifest.json``: what was emitted, from what, how to run it, and how well it agrees with the source."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FORMAT = 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Agreement:
    """An artifact's outputs against the source model's (float32, ORT optimizations off)."""

    inputs: str                      # "seeded random (batch 2)" or the data file
    max_abs_diff: float
    max_abs_output: float
    top1_agreement: float | None = None
    accuracy: float | None = None
    source_accuracy: float | None = None
    samples: int | None = None
    #: what max_abs_diff is checked against (tolerance x scale): max |output|, or more for an output behind a
    #: saturating activation (see onnxprune.verify)
    scale: float | None = None
    #: ||artifact - source|| / ||source|| of the first output (on seeded random inputs: the continuous measure)
    rel_l2: float | None = None
    #: sequence (CTC) outputs on data: line-agreement, line-accuracy and cer of the artifact, and of the source
    metrics: dict[str, float] | None = None
    source_metrics: dict[str, float] | None = None


@dataclass
class FileEntry:
    name: str
    role: str
    bytes: int = 0
    sha256: str = ""
    agreement: list[Agreement] = field(default_factory=list)


@dataclass
class Manifest:
    target: str
    source: dict[str, object]
    passes: list[str]
    onnxruntime: str
    onnxprune: str
    providers: list[str]
    provider_options: dict[str, dict[str, str]]
    session_options: dict[str, object]
    macs: int
    params: int
    input_shapes: dict[str, list[int]]
    files: list[FileEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mobile_usability: dict[str, object] | None = None
    #: static int8: the nodes kept float and why, and the metric before/after (see emit.int8_search)
    int8: dict[str, object] | None = None
    #: ``{"stage", "seconds", "items"}`` for each step of the emit run
    stages: list[dict[str, object]] = field(default_factory=list)

    def finalize(self, folder: Path) -> None:
        for f in self.files:
            path = folder / f.name
            f.bytes = path.stat().st_size
            f.sha256 = sha256(path)

    def write(self, folder: Path) -> Path:
        data = {"format": MANIFEST_FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                **asdict(self)}
        path = folder / "manifest.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path
