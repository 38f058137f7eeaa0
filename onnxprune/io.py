"""Reading and writing ONNX files.

``read_model`` turns every way a file can be bad into an :class:`~onnxprune.errors.OnnxPruneError` with a
one-line message. ``save_model`` writes atomically (temp file + rename in the destination folder, so a failure
leaves nothing half-written), never over the input, and with external data when the model needs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from onnxprune.errors import (
    ExternalDataError,
    InputFileError,
    InvalidModelError,
    OutputPathError,
    UnsupportedModelError,
)
from onnxprune.interface import repair_interface
from onnxprune.paths import check_destination, make_folder, read_regular_file

#: Protobuf cannot serialize a message of 2 GiB or more; above this many bytes of tensor data we write
#: external data (with margin for the graph itself).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
#: Tensors smaller than this stay inside the model file when writing external data: shape constants must, or
#: shape inference (and the checker) cannot read them.
EXTERNAL_DATA_MIN_TENSOR_BYTES = 1024


#: Ops ONNX Runtime's graph optimizer writes into the ONNX domain at opsets where ONNX does not define them
#: (what ``emit --target cpu`` ships): op -> the first ONNX opset that defines it (None: none does).
ORT_ONNX_DOMAIN_OPS: dict[str, int | None] = {"LayerNormalization": 17, "SimplifiedLayerNormalization": None}
#: The domain such nodes are moved to when a read-only command reads an ONNX Runtime artifact.
ORT_ARTIFACT_DOMAIN = "onnxprune.onnxruntime"


def ort_only_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of ``model`` that only ONNX Runtime understands: see :data:`ORT_ONNX_DOMAIN_OPS`."""
    version = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), None)
    if version is None:
        return []
    return [n for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in ORT_ONNX_DOMAIN_OPS
            and (ORT_ONNX_DOMAIN_OPS[n.op_type] is None or version < ORT_ONNX_DOMAIN_OPS[n.op_type])]


def _accept_ort_artifact(model: onnx.ModelProto, p: Path, ort_artifact: bool, notes: list[str] | None) -> None:
    nodes = ort_only_nodes(model)
    if not nodes:
        return
    ops = sorted({n.op_type for n in nodes})
    version = next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    if not ort_artifact:
        raise UnsupportedModelError(
            f"{p}: an ONNX Runtime-optimized model ({', '.join(ops)} at opset {version} exist only in ONNX "
            f"Runtime); rewrite the model your framework exported instead (inspect and bench read this one)")
    for n in nodes:
        n.domain = ORT_ARTIFACT_DOMAIN
    model.opset_import.append(onnx.helper.make_opsetid(ORT_ARTIFACT_DOMAIN, 1))
    if notes is not None:
        notes.append(f"read as an ONNX Runtime artifact: {', '.join(ops)} (ONNX Runtime's own ops) are kept opaque")


def read_model(path: str | os.PathLike[str], notes: list[str] | None = None, *,
               ort_artifact: bool = False) -> onnx.ModelProto:
    """Read an ONNX file, with its external data, repair its interface and check it with the ONNX checker.

    The interface repairs (:func:`onnxprune.interface.repair_interface`) are appended to ``notes`` when given.
    A model with ops that only ONNX Runtime defines in the ONNX domain (an ORT-optimized artifact) is refused
    with UnsupportedModelError unless ``ort_artifact`` (read-only use: inspect, bench): those nodes are then
    moved to :data:`ORT_ARTIFACT_DOMAIN`, so the checker and shape inference treat them as opaque.
    Raises InputFileError (missing / directory / empty / unreadable), InvalidModelError (not an ONNX
    protobuf, truncated, fails the checker) or ExternalDataError.
    """
    p = Path(path)
    data = read_regular_file(p, "ONNX model")
    if not data:
        raise InputFileError(f"{p}: file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InvalidModelError(f"{p}: not an ONNX model (cannot parse the protobuf: {_first_line(e)})") from e
    if not model.HasField("graph") or not model.opset_import:
        raise InvalidModelError(f"{p}: not an ONNX model (no graph or no opset_import; truncated or another format?)")
    if any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(model)):
        _load_external_data(model, p.parent, p)
    repairs = repair_interface(model)
    if notes is not None:
        notes.extend(repairs)
    _accept_ort_artifact(model, p, ort_artifact, notes)
    check_model(model, p, path=p if needs_external_data(model) and not repairs else None)
    return model


def _load_external_data(model: onnx.ModelProto, base_dir: Path, p: Path) -> None:
    """Load tensor data stored beside the model. A location must be a relative path that stays inside the
    model's folder (no absolute path, no ``..``, no symlink out of it): checked before anything is opened."""
    base = Path(os.path.realpath(base_dir))
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = Path(info.location)
        real = Path(os.path.realpath(base / location))
        if location.is_absolute() or ".." in location.parts or not real.is_relative_to(base) or real == base:
            raise ExternalDataError(f"{p}: external data location {info.location!r} of tensor {tensor.name!r} is "
                                    f"outside the model's folder; refusing to read it")
        if not real.is_file():
            raise ExternalDataError(f"{p}: external data file {info.location!r} for tensor {tensor.name!r} is missing")
        needed = (info.offset or 0) + (info.length or 0)
        if info.length and real.stat().st_size < needed:
            raise ExternalDataError(f"{p}: external data file {info.location!r} is shorter than tensor "
                                    f"{tensor.name!r} needs ({real.stat().st_size} < {needed} bytes)")
    try:
        external_data_helper.load_external_data_for_model(model, str(base_dir))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise ExternalDataError(f"{p}: cannot load external data: {_first_line(e)}") from e


def check_model(model: onnx.ModelProto, origin: Path | str = "model", full_check: bool = False,
                path: Path | None = None) -> None:
    """Run the ONNX checker; raise InvalidModelError with its first line on failure.

    With ``path``, the file on disk is checked instead (the checker reads its external data): needed for models
    too large for an in-memory protobuf, which are not checked at all without one.
    """
    try:
        if path is not None:
            onnx.checker.check_model(str(path), full_check=full_check)
        elif not needs_external_data(model):
            onnx.checker.check_model(model, full_check=full_check)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        raise InvalidModelError(f"{origin}: invalid ONNX model: {_first_line(e)}") from e


def _tensor_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    return _tensor_bytes(model) >= EXTERNAL_DATA_THRESHOLD


def ensure_output_path(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> Path:
    """Validate an output path before any work is done: its folder exists and it is none of the inputs."""
    out = Path(output)
    if out.exists() and out.is_dir():
        raise OutputPathError(f"{out}: is a directory, expected a file path")
    check_destination(out.parent if str(out.parent) else Path("."), out)
    for inp in inputs:
        ip = Path(inp)
        if ip.exists() and (out.resolve() == ip.resolve() or (out.exists() and os.path.samefile(out, ip))):
            raise OutputPathError(f"{out}: refusing to overwrite the input model; choose another -o path")
    return out


def save_model(model: onnx.ModelProto, output: str | os.PathLike[str], *, external_data: bool | None = None,
               inputs: tuple[str | os.PathLike[str], ...] = (), full_check: bool = False) -> Path:
    """Write ``model`` to ``output`` atomically, after the ONNX checker has passed on the written temp file.

    ``external_data=None`` writes tensor data to ``<output>.data`` only when the model is too large for a
    single protobuf (>= ~1.8 GB of weights). The model file is renamed into place last, so a reader never sees
    a model whose external data is missing.
    """
    out = ensure_output_path(output, *inputs)
    use_external = needs_external_data(model) if external_data is None else external_data
    make_folder(out.parent, out)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write: {e.strerror or e}") from None
    try:
        tmp_model = tmp_dir / out.name
        data_name = out.name + ".data"
        if use_external:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # onnx rewrites tensors to external references in place
            onnx.save_model(copy, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=EXTERNAL_DATA_MIN_TENSOR_BYTES)
            del copy
        else:
            onnx.save_model(model, tmp_model)
        check_model(model, out, full_check=full_check, path=tmp_model if use_external else None)
        mode = 0o666 & ~current_umask()  # what the user's umask gives any new file (onnx makes .data private)
        for written in (tmp_model, tmp_dir / data_name):
            if written.exists():
                os.chmod(written, mode)
        if use_external and (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, out.parent / data_name)
        os.replace(tmp_model, out)
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3])[:300]


def write_text_atomic(path: str | os.PathLike[str], text: str, *inputs: str | os.PathLike[str]) -> Path:
    """Write a small text file (plans, reports) atomically, with the same checks as models."""
    return write_bytes_atomic(path, text.encode(), *inputs)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *inputs: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` through a temp file renamed into place."""
    out = ensure_output_path(path, *inputs)
    make_folder(out.parent, out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, out)
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
