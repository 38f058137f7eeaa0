"""``onnxprune bench MODEL [MODEL ...]``: interleaved latency comparison against the first model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from onnxprune.bench import BenchOptions, run_benchmark
from onnxprune.bench.report import table, write_outputs
from onnxprune.cli.common import add_data_args, console, guard_paths, image_preprocess
from onnxprune.errors import InvalidModelError, UsageError
from onnxprune.io import ensure_output_path
from onnxprune.progress import stage
from onnxprune.verify import parse_input_shapes


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
    try:
        threads = tuple(int(t) for t in args.threads.split(","))
        if any(t < 0 for t in threads):
            raise ValueError
    except ValueError:
        raise UsageError(f"--threads {args.threads!r}: expected comma-separated integers, e.g. 1,2") from None
    outputs = {k: getattr(args, k) for k in ("json", "csv", "markdown", "plot", "html")}
    guard_paths(args, inputs=("models", "data"), files=tuple(outputs))
    for path in outputs.values():
        if path is not None:
            ensure_output_path(path, *args.models)
    options = BenchOptions(runs=args.runs, seconds=args.seconds, threads=threads, provider=args.provider,
                           batch=args.batch, input_shapes=parse_input_shapes(args.input_shape), data=args.data,
                           preprocess=image_preprocess(args), data_limit=args.limit)
    from onnxprune.bench.runner import providers_for

    providers_for(options.provider)  # fail early and clearly when CUDA is not there
    with stage(f"bench: {len(args.models)} models interleaved", total=len(threads) * options.runs,
               unit="rounds") as progress:

        def advance(done: int, total: int) -> None:
            progress.total = total
            progress.advance(n=done - progress.done)

        results = run_benchmark(list(args.models), options, advance)
    Console(width=max(console.width, 140)).print(table(results))
    console.print("rel L2: outputs vs the first model on seeded random inputs"
                  + (f"; top-1 agree and accuracy: on {args.data}" if args.data else
                     " (--data gives top-1 agreement and accuracy on real inputs)"), soft_wrap=True, markup=False)
    write_outputs(results, options, json_path=outputs["json"], csv_path=outputs["csv"],
                  markdown_path=outputs["markdown"], plot_path=outputs["plot"], html_path=outputs["html"])
    failed = [r for r in results if r.latency is None]
    for path in dict.fromkeys(r.path for r in failed):
        error = next(r.error for r in failed if r.path == path)
        console.print(f"failed: {error if path in (error or '') else f'{path}: {error}'}", markup=False,
                      soft_wrap=True)
    return InvalidModelError.exit_code if failed else 0
