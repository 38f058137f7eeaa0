"""What every subcommand shares: argument helpers, error reporting, the console."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

import onnx
from rich.console import Console

from onnxprune.data import (
    ChannelOrder,
    Dataset,
    ImagePreprocess,
    Layout,
    Resize,
    load_data,
)
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.paths import check_paths
from onnxprune.verify import InputSpec, parse_input_shapes

#: Piped output (logs, CI, files) is not cut at 80 columns: tables and lines get the width they need.
PIPED_WIDTH = 240
console = Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else PIPED_WIDTH)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and raise UsageError, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_input_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224", default=[],
                   help="concrete shape for an input with dynamic dims (repeatable)")
    p.add_argument("--batch", type=int, default=1, help="size of a dynamic leading (batch) dim (default 1)")


def input_spec(args: argparse.Namespace, batch: int | None = None) -> InputSpec:
    if args.batch < 1:
        raise UsageError("--batch must be >= 1")
    return InputSpec(parse_input_shapes(args.input_shape), batch if batch is not None else args.batch)


def load_model(path: str | Path, *, ort_artifact: bool = False, normalized: bool = True) -> onnx.ModelProto:
    """``onnxprune.load`` that tells the user, on stderr, what was repaired in the file's interface.
    ``normalized=False``: the graph as the file has it (interface repairs only), for commands that must keep
    its structure."""
    from onnxprune.api import load
    from onnxprune.io import read_model

    notes: list[str] = []
    model = load(path, notes, ort_artifact=ort_artifact) if normalized else \
        read_model(path, notes, ort_artifact=ort_artifact)
    for note in notes:
        err_console.print(f"onnxprune: note: {path}: {note}", soft_wrap=True, markup=False)
    return model


def _flag(name: str) -> str:
    return "-o" if name == "output" else "--" + name.replace("_", "-")


def _values(value: object) -> list[object]:
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, (list, tuple)) else [value]


def guard_paths(args: argparse.Namespace, inputs: tuple[str, ...] = (), files: tuple[str, ...] = (),
                folders: tuple[str, ...] = ()) -> None:
    """:func:`onnxprune.paths.check_paths` on the named arguments, before any work is done."""
    check_paths(inputs=[v for name in inputs for v in _values(getattr(args, name, None))],
                files=[(_flag(name), v) for name in files for v in _values(getattr(args, name, None))],
                folders=[(_flag(name), v) for name in folders for v in _values(getattr(args, name, None))])


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def report_error(prog: str, e: OnnxPruneError) -> int:
    err_console.print(f"{prog}: error: {e}", soft_wrap=True, markup=False)
    return e.exit_code


def figure(metric: str, value: float) -> str:
    """A metric as every command prints it: accuracy and agreement in percent, the others as numbers."""
    percent = ("accuracy", "agreement", "top1_agreement", "line-accuracy", "line-agreement", "cer")
    return f"{value:.2%}" if metric in percent else f"{value:.4g}"


def human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1000
    return f"{n:.2f}P"


def _floats(flag: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None
    if not values:
        raise UsageError(f"{flag}: expected at least one number")
    return values


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts if p)
    except ValueError:
        raise UsageError(f"--size {text!r}: expected H,W or one number, e.g. 224,224") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2:
        raise UsageError(f"--size {text!r}: expected H,W or one number")
    return sizes  # type: ignore[return-value]


def add_data_args(p: argparse.ArgumentParser, purpose: str, required: bool = False, limit: int | None = None,
                  flag: str = "--data") -> None:
    """``--data`` (an .npz, a folder of .npy files, or a folder of images), ``--limit`` and image preprocessing."""
    g = p.add_argument_group("data", "an .npz keyed by input name (optional 'labels'), a folder of .npy files (one per "
                                     "input, or one per sample), or a folder of images (class subfolders = labels)")
    g.add_argument(flag, type=Path, required=required, help=purpose)
    g.add_argument("--limit", type=int, default=limit,
                   help="use at most N samples (a seeded random subset)" + (f" (default {limit})" if limit else ""))
    g.add_argument("--size", help="images: resize to H,W (default: the model input's static size)")
    g.add_argument("--resize", choices=[r.value for r in Resize], default=Resize.STRETCH.value,
                   help="images: stretch to H,W, or crop (shorter side to fit, centre crop) (default stretch)")
    g.add_argument("--mean", default="0", help="images: per-channel mean subtracted after scaling (default 0)")
    g.add_argument("--std", default="1", help="images: per-channel std divided by (default 1)")
    g.add_argument("--scale", type=float, default=1 / 255, help="images: pixel multiplier (default 1/255)")
    g.add_argument("--layout", choices=[lay.value for lay in Layout],
                   help="images: tensor layout (default: from the model input)")
    g.add_argument("--channel-order", choices=[c.value for c in ChannelOrder], default=ChannelOrder.RGB.value,
                   help="images: channel order (default rgb)")


def image_preprocess(args: argparse.Namespace) -> ImagePreprocess:
    return ImagePreprocess(size=_size(args.size) if args.size else None, mean=_floats("--mean", args.mean),
                           std=_floats("--std", args.std), scale=args.scale,
                           layout=Layout(args.layout) if args.layout else None,
                           channel_order=ChannelOrder(args.channel_order), resize=Resize(args.resize))


def data_from_args(args: argparse.Namespace, model: onnx.ModelProto, flag: str = "data") -> Dataset | None:
    """The dataset named by ``--data`` (or another flag sharing the preprocessing), or None when not given."""
    path = getattr(args, flag)
    return None if path is None else load_data(path, model, image_preprocess(args), args.limit)


def glob_values(flag: str, items: list[str], example: str) -> tuple[tuple[str, float], ...]:
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
