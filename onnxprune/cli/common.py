"""What every subcommand shares: argument helpers, error reporting, the console."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import NoReturn, TypeVar

from rich.console import Console

from onnxprune.data import (
    ChannelOrder,
    Layout,
    Resize,
)
from onnxprune.errors import OnnxPruneError, OptionStyle, UsageError
from onnxprune.steps import options_as
from onnxprune.steps.inputs import (  # noqa: F401 - re-exported for the subcommands that are not steps
    guard_paths,
    input_spec,
    load_model,
)

StepT = TypeVar("StepT")

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


def step_from_args(cls: type[StepT], args: argparse.Namespace) -> StepT:
    """The step ``cls`` with its options from the parsed arguments (argparse's lists become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):   # type: ignore[arg-type]
        value = getattr(args, f.name)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def cli_text(message: str) -> str:
    """A library message (options named as ```keyword```) with each option written as its flag."""
    return options_as(message, OptionStyle.FLAG)


def report_error(prog: str, e: OnnxPruneError) -> int:
    err_console.print(f"{prog}: error: {cli_text(str(e))}", soft_wrap=True, markup=False)
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
