"""Turning a step's options into the library's inputs: input shapes, the model, data, path checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import onnx

from onnxprune.data import (
    ChannelOrder,
    Dataset,
    ImagePreprocess,
    Layout,
    Resize,
    load_data,
)
from onnxprune.errors import UsageError
from onnxprune.paths import check_paths
from onnxprune.verify import InputSpec, parse_input_shapes


class Merged:
    """Attribute lookup in several objects, first hit wins (a step's context, then its options)."""

    def __init__(self, *sources: object) -> None:
        self._sources = sources

    def __getattr__(self, name: str) -> Any:
        for source in self._sources:
            if hasattr(source, name):
                return getattr(source, name)
        return None


def input_spec(options: Any, batch: int | None = None) -> InputSpec:
    """``input_shape`` (NAME=1x3x224x224 strings) and ``batch`` as an InputSpec."""
    if options.batch < 1:
        raise UsageError("`batch` must be >= 1")
    return InputSpec(parse_input_shapes(list(options.input_shape)), batch if batch is not None else options.batch)


def load_model(path: str | Path, *, ort_artifact: bool = False, normalized: bool = True) -> onnx.ModelProto:
    """``onnxprune.load`` that tells the user, on stderr, what was repaired in the file's interface.
    ``normalized=False``: the graph as the file has it (interface repairs only), for steps that must keep
    its structure."""
    from onnxprune.api import load
    from onnxprune.io import read_model

    notes: list[str] = []
    model = load(path, notes, ort_artifact=ort_artifact) if normalized else \
        read_model(path, notes, ort_artifact=ort_artifact)
    for note in notes:
        print(f"onnxprune: note: {path}: {note}", file=sys.stderr, flush=True)
    return model


def _flag(name: str) -> str:
    return "-o" if name == "output" else f"`{name}`"


def _values(value: object) -> list[object]:
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, (list, tuple)) else [value]


def guard_paths(source: Any, inputs: tuple[str, ...] = (), files: tuple[str, ...] = (),
                folders: tuple[str, ...] = ()) -> None:
    """:func:`onnxprune.paths.check_paths` on the named attributes of ``source``, before any work is done."""
    check_paths(inputs=[v for name in inputs for v in _values(getattr(source, name, None))],
                files=[(_flag(name), v) for name in files for v in _values(getattr(source, name, None))],
                folders=[(_flag(name), v) for name in folders for v in _values(getattr(source, name, None))])


def _floats(flag: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None
    if not values:
        raise UsageError(f"{flag}: expected at least one number")
    return values


def _size(text: str) -> tuple[int, int]:
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts if p)
    except ValueError:
        raise UsageError(f"`size` {text!r}: expected H,W or one number, e.g. 224,224") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2:
        raise UsageError(f"`size` {text!r}: expected H,W or one number")
    return sizes  # type: ignore[return-value]


def image_preprocess(options: Any) -> ImagePreprocess:
    """The image preprocessing options (``size``, ``mean``, ``std``, ``scale``, ``layout``, ``channel_order``,
    ``resize``)."""
    return ImagePreprocess(size=_size(options.size) if options.size else None, mean=_floats("`mean`", options.mean),
                           std=_floats("`std`", options.std), scale=options.scale,
                           layout=Layout(options.layout) if options.layout else None,
                           channel_order=ChannelOrder(options.channel_order), resize=Resize(options.resize))


def data_from(options: Any, model: onnx.ModelProto, name: str = "data") -> Dataset | None:
    """The dataset named by option ``name`` (``data``, ``eval_data``...) with the shared preprocessing and
    ``limit``, or None when not given."""
    path = getattr(options, name)
    return None if path is None else load_data(path, model, image_preprocess(options), options.limit)


def glob_values(flag: str, items: tuple[str, ...] | list[str], example: str) -> tuple[tuple[str, float], ...]:
    """Parse repeated ``GLOB=VALUE`` options (``--ratio-for``, ``--sparsity-for``)."""
    out = []
    for item in items:
        glob, sep, value = item.rpartition("=")
        try:
            if not sep or not glob:
                raise ValueError
            out.append((glob, float(value)))
        except ValueError:
            raise UsageError(f"{flag} {item!r}: expected GLOB=VALUE, e.g. {example!r}") from None
    return tuple(out)
