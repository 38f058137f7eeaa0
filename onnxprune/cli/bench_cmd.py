"""``onnxprune bench MODEL [MODEL ...]``: interleaved latency comparison against the first model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from onnxprune.benchmark.report import table
from onnxprune.cli.common import add_data_args, cli_text, console, step_from_args
from onnxprune.steps.base import StepContext
from onnxprune.steps.bench import BenchStep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="compare the latency of model variants side by side (interleaved)",
                       description="Runs every model in one process, interleaved (order rotated per round), after a "
                                   "warm-up. Speedup and agreement are against the first model. A model that fails "
                                   "to load is reported (exit code 4) and the others still run.")
    p.add_argument("models", nargs="+", help=".onnx or .ort files; the first is the baseline")
    p.add_argument("--runs", type=int, default=100, help="rounds (default 100)")
    p.add_argument("--seconds", type=float, help="run for this long instead of --runs rounds")
    p.add_argument("--threads", default="1", help="intra-op thread counts, e.g. 1,2 (default 1)")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=1, help="size of a dynamic batch dim (default 1)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224")
    add_data_args(p, "inputs for top-1 agreement with the first model, and accuracy when labelled")
    for fmt in ("json", "csv", "markdown", "html"):
        p.add_argument(f"--{fmt}", type=Path, metavar="FILE", help=f"write the results as {fmt}")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="latency with intervals, and latency vs MACs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    models = tuple(Path(m) for m in args.models)
    result = step_from_args(BenchStep, args).run(StepContext(models[0], report=args.json, models=models))
    results = result.details
    Console(width=max(console.width, 140)).print(table(results))
    console.print("rel L2: outputs vs the first model on seeded random inputs"
                  + (f"; top-1 agree and accuracy: on {args.data}" if args.data else
                     " (--data gives top-1 agreement and accuracy on real inputs)"), soft_wrap=True, markup=False)
    failed = [r for r in results if r.latency is None]
    for path in dict.fromkeys(r.path for r in failed):
        error = cli_text(next(r.error or "" for r in failed if r.path == path))
        console.print(f"failed: {error if path in (error or '') else f'{path}: {error}'}", markup=False,
                      soft_wrap=True)
    return result.exit_code
