"""What every subcommand shares: argument helpers, error reporting, the console."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.verify import InputSpec, parse_input_shapes

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


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


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def report_error(prog: str, e: OnnxPruneError) -> int:
    err_console.print(f"{prog}: error: {e}", soft_wrap=True, markup=False)
    return e.exit_code


def human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1000
    return f"{n:.2f}P"
