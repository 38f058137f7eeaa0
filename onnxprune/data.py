"""Calibration / evaluation data for a model, from three kinds of source:

- an ``.npz`` of arrays keyed by model input name (sample axis first), with optional ``labels``;
- a folder of ``.npy`` files: either one file per model input named after it (``x.npy``, optional
  ``labels.npy``), or one file per sample (single-input models; the sample with or without a leading axis of 1);
- a folder of images (read with Pillow), preprocessed by :class:`ImagePreprocess`.

In the per-sample and image forms, files directly in the folder have no labels; files in class subfolders
(``DIR/<class>/img.png``, the ImageFolder convention) are labelled by the subfolder's index in sorted order.
``limit`` takes a seeded random subset (so a limited calibration set is not one class), read lazily.
Every array is checked against the model input it feeds: rank, static dims and dtype; a mismatch is an error
that names the input (and the file).
"""

from __future__ import annotations

import enum
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import onnx

from onnxprune.errors import InputFileError, UsageError
from onnxprune.limits import ensure_memory, gib
from onnxprune.paths import regular_file
from onnxprune.verify import graph_inputs

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
SUBSET_SEED = 0


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]   # each with the sample axis first
    labels: np.ndarray | None
    fixed_batch: int | None = None  # the model's static batch size, when it has one

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        size = self.fixed_batch or size
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}

    def limit(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        n = _whole_batches(n, self.fixed_batch)
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n],
                       self.fixed_batch)

    def spread(self, n: int) -> "Dataset":
        """``n`` samples evenly spaced over the set (all of them when it has no more): a set stored sorted by class
        keeps every class, where :meth:`limit` would keep the first."""
        if n >= len(self):
            return self
        n = _whole_batches(n, self.fixed_batch)
        pick = np.unique(np.linspace(0, len(self) - 1, n).round().astype(int))
        return Dataset({k: v[pick] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[pick], self.fixed_batch)


class Layout(enum.Enum):
    NCHW = "nchw"
    NHWC = "nhwc"


class ChannelOrder(enum.Enum):
    RGB = "rgb"
    BGR = "bgr"


class Resize(enum.Enum):
    STRETCH = "stretch"   # resize to exactly H x W
    CROP = "crop"         # resize the shorter side to fit, then crop the centre (the ImageNet convention)


@dataclass(frozen=True)
class ImagePreprocess:
    """``x = (pixel * scale - mean) / std`` per channel, after resizing to ``size`` (H, W).

    Defaults: ``size`` and ``layout`` from the model input's static shape (NCHW when the channel axis cannot be
    told), channels from the model input (1: grayscale, 3: colour), pixels scaled to [0, 1], mean 0, std 1.
    ``mean``/``std`` take one value or one per channel, in the scaled range (ImageNet: 0.485,0.456,0.406 and
    0.229,0.224,0.225).
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: Layout | None = None
    channel_order: ChannelOrder = ChannelOrder.RGB
    resize: Resize = Resize.STRETCH

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise UsageError(f"`size` {self.size}: expected H,W (or one number) of positive sizes")
        if any(s == 0 for s in self.std):
            raise UsageError("`std` values must be non-zero")


def load_data(path: str | os.PathLike[str], model: onnx.ModelProto, preprocess: ImagePreprocess = ImagePreprocess(),
              limit: int | None = None) -> Dataset:
    """Read ``path`` (.npz file, folder of .npy files or folder of images) for ``model``; see the module doc."""
    p = Path(path)
    if limit is not None and limit < 1:
        raise UsageError(f"`limit` {limit} must be >= 1")
    if p.exists() and not p.is_dir():
        regular_file(p, "data")
        if p.suffix.lower() != ".npz":
            raise UsageError(f"{p}: `data` takes an .npz file or a folder of .npy files or images")
        return load_npz(p, model).limit(limit)
    if not p.is_dir():
        raise InputFileError(f"{p}: no such data file or folder")
    names = [vi.name for vi in graph_inputs(model)]
    per_input = {n: p / f"{n}.npy" for n in names}
    if names and all(f.is_file() for f in per_input.values()):
        arrays = {n: _load_npy(f) for n, f in per_input.items()}
        labels = _load_npy(p / "labels.npy") if (p / "labels.npy").is_file() else None
        return _checked(p, arrays, labels, model).limit(limit)
    files, labels = _sample_files(p)
    if len(names) != 1:
        raise UsageError(f"{p}: a folder of samples feeds a single-input model; this one has inputs "
                         f"{', '.join(names)} (give one NAME.npy per input, or an .npz)")
    if limit is not None and limit < len(files):
        pick = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(files))[:limit])
        files = [files[i] for i in pick]
        labels = None if labels is None else labels[pick]
    vi = graph_inputs(model)[0]
    if files[0].suffix.lower() == ".npy":
        arrays = [_load_npy(f) for f in files]
        rank = len(vi.type.tensor_type.shape.dim)
        arrays = [a[0] if a.ndim == rank and a.shape[0] == 1 else a for a in arrays]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise UsageError(f"{p}: samples have different shapes: {', '.join(str(list(s)) for s in sorted(shapes))}")
        stacked = np.stack(arrays)
    else:
        stacked = _read_images(files, vi, preprocess)
    return _checked(p, {vi.name: stacked}, labels, model)


def load_npz(path: str | os.PathLike[str], model: onnx.ModelProto) -> Dataset:
    """Load an .npz keyed by input name (optional ``labels``) and check it against the model's inputs."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such data file (expected an .npz keyed by input name)")
    regular_file(p, "data")
    try:
        _check_npz_sizes(p)
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputFileError(f"{p}: not a readable .npz: {e}") from None
    labels = arrays.pop("labels", None)
    return _checked(p, arrays, labels, model)


def _whole_batches(n: int, fixed: int | None) -> int:
    return n if not fixed or fixed == 1 else max(fixed, n // fixed * fixed)


def _checked(source: Path, arrays: dict[str, np.ndarray], labels: np.ndarray | None,
             model: onnx.ModelProto) -> Dataset:
    inputs: dict[str, np.ndarray] = {}
    fixed: set[int] = set()
    for vi in graph_inputs(model):
        if vi.name not in arrays:
            raise UsageError(f"{source}: no array named {vi.name!r} (model input); arrays: "
                             f"{', '.join(sorted(arrays)) or 'none'}")
        arr = arrays[vi.name]
        shaped = vi.type.tensor_type.HasField("shape")
        dims = vi.type.tensor_type.shape.dim
        if shaped and len(dims) != arr.ndim:
            raise UsageError(f"{source}: {vi.name!r} has shape {list(arr.shape)} (rank {arr.ndim}), the model input "
                             f"has rank {len(dims)}")
        for axis, d in enumerate(dims):  # a dim_value of 0 or -1 (some exporters) means "any"
            if axis > 0 and d.dim_value > 0 and d.dim_value != arr.shape[axis]:
                raise UsageError(f"{source}: {vi.name!r} has shape {list(arr.shape)}, the model input needs "
                                 f"{d.dim_value} at axis {axis}")
        if dims and dims[0].dim_value > 0:
            fixed.add(dims[0].dim_value)
        want = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if arr.dtype != want and not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise UsageError(f"{source}: {vi.name!r} is {arr.dtype}, the model input is {np.dtype(want)}")
        inputs[vi.name] = arr.astype(want, copy=False)
    sizes = {v.shape[0] for v in inputs.values()}
    if len(sizes) > 1 or (labels is not None and labels.shape[0] not in sizes):
        raise UsageError(f"{source}: arrays disagree on the number of samples")
    batch = fixed.pop() if len(fixed) == 1 else None
    n = sizes.pop() if sizes else 0
    if n == 0:
        raise UsageError(f"{source}: holds no samples")
    if batch and batch > 1 and n % batch:
        raise UsageError(f"{source}: {n} samples do not split into the model's fixed batch of {batch}")
    return Dataset(inputs, None if labels is None else _label_array(source, labels, n), batch)


def _label_array(source: Path, labels: np.ndarray, n: int) -> np.ndarray:
    """Class ids ``(N,)`` (an ``(N, 1)`` column too), or ``(N, L)`` rows (sequence targets, e.g. CTC labels
    padded with -1) kept as they are."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and int(np.prod(labels.shape[1:])) == 1:
        return labels.reshape(-1)
    if labels.ndim > 2:
        raise UsageError(f"{source}: labels of shape {list(labels.shape)}: expected (samples,) class ids or "
                         f"(samples, length) sequences")
    return labels


#: Deflate cannot expand data more than ~1032x; a member declaring more is not a real zip entry.
MAX_DEFLATE_RATIO = 1100


def _declared_bytes(f: IO[bytes], source: str) -> int:
    """Bytes of the array an .npy stream declares in its header (read without reading the data)."""
    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = reader(f)
    if dtype.hasobject:
        raise ValueError("holds Python objects (pickled); only numeric arrays are read")
    count = 1
    for d in shape:
        count *= int(d)
    return count * dtype.itemsize


def _check_npz_sizes(path: Path) -> None:
    """Refuse, before numpy allocates anything, arrays whose declared size the archive cannot hold (a header
    declaring gigabytes in a small file) or that do not fit in memory."""
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            if info.file_size > max(info.compress_size, 1) * MAX_DEFLATE_RATIO + 4096:
                raise ValueError(f"member {info.filename} declares {info.file_size} bytes from {info.compress_size}: "
                                 f"not a valid archive")
            with z.open(info) as f:
                declared = _declared_bytes(f, str(path))
            if declared > info.file_size:
                raise ValueError(f"array {info.filename[:-4]!r} declares {gib(declared)} but the archive holds "
                                 f"{gib(info.file_size)} for it")
            total += declared
    ensure_memory(total, f"{path}: the arrays")


def _load_npy(path: Path) -> np.ndarray:
    regular_file(path, ".npy")
    try:
        with open(path, "rb") as f:
            declared = _declared_bytes(f, str(path))
            if declared > path.stat().st_size:
                raise ValueError(f"the header declares {gib(declared)} but the file holds "
                                 f"{gib(path.stat().st_size)}")
        ensure_memory(declared, f"{path}: the array")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputFileError(f"{path}: not a readable .npy: {e}") from None


def _sample_files(folder: Path) -> tuple[list[Path], np.ndarray | None]:
    """Sample files directly in ``folder`` (unlabelled) or in class subfolders (labelled by sorted index)."""
    def samples(d: Path) -> list[Path]:
        return sorted(f for f in d.iterdir() if f.is_file() and (f.suffix.lower() == ".npy"
                                                                 or f.suffix.lower() in IMAGE_SUFFIXES))
    flat = samples(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if flat and classes and any(samples(c) for c in classes):
        raise UsageError(f"{folder}: has samples both directly inside and in subfolders: use one layout")
    if flat:
        files, labels = flat, None
    else:
        per_class = [(i, samples(c)) for i, c in enumerate(classes)]
        files = [f for _, fs in per_class for f in fs]
        labels = np.asarray([i for i, fs in per_class for _ in fs], dtype=np.int64)
    if not files:
        raise UsageError(f"{folder}: no .npy or image files (looked in it and in its subfolders)")
    if len({f.suffix.lower() == ".npy" for f in files}) > 1:
        raise UsageError(f"{folder}: mixes .npy files and images: use one kind")
    return files, labels


def _image_geometry(vi: onnx.ValueInfoProto, pre: ImagePreprocess) -> tuple[Layout, int, tuple[int, int]]:
    dims = [d.dim_value if d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UsageError(f"input {vi.name!r} has rank {len(dims)}: images feed a 4-D input (N,C,H,W or N,H,W,C)")
    layout = pre.layout or (Layout.NHWC if dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4) else Layout.NCHW)
    channels, h, w = (dims[1], dims[2], dims[3]) if layout is Layout.NCHW else (dims[3], dims[1], dims[2])
    channels = channels or 3
    if channels not in (1, 3, 4):
        raise UsageError(f"input {vi.name!r} has {channels} channels in {layout.value.upper()}: images give 1, 3 or 4 "
                         f"(set `layout` if the channel axis was guessed wrong)")
    size = pre.size or ((h, w) if h and w else None)
    if size is None:
        raise UsageError(f"input {vi.name!r} has dynamic height/width: give `size` H,W for the images")
    for name, values in (("`mean`", pre.mean), ("`std`", pre.std)):
        if len(values) not in (1, channels):
            raise UsageError(f"{name} has {len(values)} values; input {vi.name!r} has {channels} channels")
    return layout, channels, size


def _read_images(files: list[Path], vi: onnx.ValueInfoProto, pre: ImagePreprocess) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise UsageError("reading images needs Pillow: pip install pillow") from None
    layout, channels, (h, w) = _image_geometry(vi, pre)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    ensure_memory(len(files) * h * w * channels * 4, f"{len(files)} images at {h}x{w}x{channels}")
    out = np.empty((len(files), h, w, channels), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                img = img.convert(mode)
                if pre.resize is Resize.CROP:
                    s = max(h / img.height, w / img.width)
                    img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))),
                                     Image.Resampling.BILINEAR)
                    left, top = (img.width - w) // 2, (img.height - h) // 2
                    img = img.crop((left, top, left + w, top + h))
                elif img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32).reshape(h, w, channels)
        except Image.DecompressionBombError as e:
            raise InputFileError(f"{f}: image too large to decode safely (decompression bomb?): {e}") from None
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise InputFileError(f"{f}: not a readable image: {e}") from None
        if pre.channel_order is ChannelOrder.BGR and channels >= 3:
            pixels = pixels[..., [2, 1, 0, *range(3, channels)]]
        out[i] = (pixels * pre.scale - mean) / std
    return out if layout is Layout.NHWC else np.ascontiguousarray(out.transpose(0, 3, 1, 2))
