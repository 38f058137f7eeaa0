"""Calibration / evaluation data: an ``.npz`` of arrays keyed by model input name, with optional ``labels``."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import InputFileError, UsageError
from onnxprune.verify import graph_inputs


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]   # each with the sample axis first
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}

    def limit(self, n: int) -> "Dataset":
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n])


def load_npz(path: str | os.PathLike[str], model: onnx.ModelProto) -> Dataset:
    """Load ``path`` and check it against the model's inputs (names, rank, static dims, dtype)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such data file (expected an .npz keyed by input name)")
    try:
        with np.load(p) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputFileError(f"{p}: not a readable .npz: {e}") from None
    labels = arrays.pop("labels", None)
    inputs: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        if vi.name not in arrays:
            raise UsageError(f"{p}: no array named {vi.name!r} (model input); arrays: {', '.join(sorted(arrays))}")
        arr = arrays[vi.name]
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != arr.ndim:
            raise UsageError(f"{p}: {vi.name!r} has rank {arr.ndim}, the model input has rank {len(dims)}")
        for axis, d in enumerate(dims):
            if axis > 0 and d.HasField("dim_value") and d.dim_value != arr.shape[axis]:
                raise UsageError(f"{p}: {vi.name!r} has shape {list(arr.shape)}, the model input needs "
                                 f"{d.dim_value} at axis {axis}")
        want = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        inputs[vi.name] = arr.astype(want, copy=False)
    sizes = {v.shape[0] for v in inputs.values()}
    if len(sizes) != 1 or (labels is not None and labels.shape[0] not in sizes):
        raise UsageError(f"{p}: arrays disagree on the number of samples")
    return Dataset(inputs, labels)
