"""How much a measured latency ratio moves between windows, by estimator, on this machine.

The latency planner and bench_latency_plan time a pruned model against the original, interleaved, and take a
ratio. Two estimators from the same rounds:

- *medians*: median(pruned) / median(original), each median over all rounds (before the paired estimator);
- *paired*: the median over rounds of pruned / original in the same round (``paired_timing``, now used).

For every zoo model (folded legacy export, input as in bench_latency_plan) and 1 and 2 threads, one pruned
variant (``--target-flops 0.6 --round-to 8``: how it was planned does not matter here) is timed against the
original in --windows windows of --runs rounds each, fresh sessions per window, as the planner measures. Per
cell and estimator: the spread of the windows' ratios (max - min, and the standard deviation, relative to their
median). The smaller the spread, the less two measurements of one plan disagree, and the closer a plan the
planner accepted lands when measured again.

Usage: python -m benchmarks.bench_latency_estimator [--out benchmarks/results] [--runs 30] [--windows 10]
       [--models a,b] [--threads 1,2]
"""

from __future__ import annotations

import statistics
import sys
import warnings

import numpy as np

from benchmarks.bench_latency_plan import zoo_model
from benchmarks.common import machine, write_results, zoo_arguments, zoo_cells
from onnxprune.latency.measure import interleaved_times
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

ESTIMATORS = ("medians", "paired")


def window_ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Both estimators of pruned / original from one window's rounds."""
    original, pruned = np.asarray(times["original"]), np.asarray(times["pruned"])
    return {"medians": float(np.median(pruned) / np.median(original)),
            "paired": float(np.median(pruned / original))}


def spread(values: list[float]) -> dict[str, float]:
    mid = statistics.median(values)
    return {"median": mid, "range": (max(values) - min(values)) / mid, "std": statistics.pstdev(values) / mid}


def cell(name: str, threads: int, runs: int, windows: int) -> dict[str, object]:
    model, shape = zoo_model(name)
    spec = InputSpec({"input": shape})
    pruned = prune(model, PlanOptions(target_flops=0.6, round_to=8), spec=spec).model
    per: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    original_ms = []
    for _ in range(windows):
        times = interleaved_times({"original": model, "pruned": pruned}, TARGETS["cpu"], threads, spec.shapes,
                                  min_rounds=runs)
        for e, r in window_ratios(times).items():
            per[e].append(r)
        original_ms.append(statistics.median(times["original"]) * 1000)
    return {"model": name, "input": "x".join(map(str, shape)), "threads": threads, "windows": windows,
            "runs": runs, "original_ms": original_ms, "ratios": per,
            **{e: spread(v) for e, v in per.items()}}


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = ["# Latency ratio estimators: how far windows of one pair disagree (ONNX Runtime CPU)", "",
             f"Command: `{command}`  ", f"Machine: {machine()}", "",
             "Each zoo model against its `--target-flops 0.6 --round-to 8` variant, batch 1, ORT optimizations on, "
             "spinning off, interleaved, fresh sessions per window, random inputs. *medians*: median(pruned) / "
             "median(original); *paired*: median over rounds of pruned / original in the same round; both from the "
             "same rounds. range = (max - min) / median of the windows' ratios; std = standard deviation / median. "
             "original ms: the original's median per window, min to max (how busy the machine was).", "",
             "| model | input | threads | windows × rounds | original ms | medians: ratio | range | std "
             "| paired: ratio | range | std |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, p = r["medians"], r["paired"]
        lines.append(f"| {r['model']} | {r['input']} | {r['threads']} | {r['windows']} × {r['runs']} | "
                     f"{min(r['original_ms']):.2f}–{max(r['original_ms']):.2f} | {m['median']:.3f} | "
                     f"{m['range']:.1%} | {m['std']:.1%} | {p['median']:.3f} | {p['range']:.1%} | {p['std']:.1%} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    for threads in sorted({r["threads"] for r in rows}):
        cells = [r for r in rows if r["threads"] == threads]
        std = {e: statistics.median(r[e]["std"] for r in cells) for e in ESTIMATORS}
        rng = {e: statistics.median(r[e]["range"] for r in cells) for e in ESTIMATORS}
        narrower = sum(r["paired"]["std"] < r["medians"]["std"] for r in cells)
        shift = statistics.median(r["paired"]["median"] / r["medians"]["median"] - 1 for r in cells)
        out.append(f"- {threads} thread(s), {len(cells)} models: std across windows, median over models: medians "
                   f"{std['medians']:.1%}, paired {std['paired']:.1%}; range {rng['medians']:.1%} vs "
                   f"{rng['paired']:.1%}; paired narrower in {narrower}/{len(cells)}; paired ratio vs medians ratio "
                   f"(median over models) {shift:+.1%}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = zoo_arguments(__doc__, "latency_estimator", windows=10).parse_args(argv)
    warnings.filterwarnings("ignore")
    rows = zoo_cells(args.models, args.threads, lambda name, threads: [cell(name, threads, args.runs, args.windows)],
                     lambda got: (f"medians {got[0]['medians']['median']:.3f} std {got[0]['medians']['std']:.1%}, "
                                  f"paired {got[0]['paired']['median']:.3f} std {got[0]['paired']['std']:.1%}"))
    command = "python -m benchmarks.bench_latency_estimator " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.out, args.name, rows, markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
