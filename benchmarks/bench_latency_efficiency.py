"""How efficient a latency plan can be: the default latency plan against the plan that keeps the most MACs.

Efficiency (speedup / MACs reduction) measures how much of a MACs cut turns into speed. The default latency plan
(`prune --target-latency R`: L1 scores, one ratio then greedy steps) keeps the most *importance* within the
budget, not the most MACs. The *max-MACs* plan (`--target-latency R --global --criterion uniform`: every unit
scores 1, so the greedy knapsack takes the step down that removes the fewest MACs per millisecond saved) is the
plan the measured per-layer latency curves allow with the highest efficiency the planner can find. Where its
efficiency is below 0.95 too, no plan of kept channel counts on those curves reaches 0.95 (up to the greedy's
gap, see onnxprune.latency.planner). Each plan is also run under ORT's profiler together with the original
(bench_latency_breakdown's kernel classes; the two alternate run by run as in the paired timing, so a busy spell
of the shared machine falls on both alike: profiled one after the other, one U-Net plan measured 0.69, 0.92 and
0.98 in three runs where the paired timing measured 1.00-1.02) to show what holds a plan back: each class's time
above perfect scaling (the original's time in that class x the MACs kept); these sum to the plan's whole excess
(achieved - MACs kept; *padding* is the dense kernels' share from computing channels padded to ORT's NCHWc
block), and the largest names what holds it back most. Also shown: the *bound* (its efficiency if its dense
kernels scaled exactly with the model's MACs and everything else took the time it measured) and the dense
kernels' own efficiency (speedup of their time / reduction of the MACs they compute).

For every zoo model (folded legacy export, input as in bench_latency_plan) and thread count, at R = 0.7 and 0.5:
the latency plan, the max-MACs plan and the MACs plan (`--target-flops R --round-to 8`), no recovery (neither
speed nor MACs depend on it). Each is timed against the original in a pair, interleaved (ORT optimizations on,
spinning off, batch 1, random inputs), at least --runs rounds (and 1 s), a pass's ratio the median over rounds of
variant / original in the same round; --windows passes over all pairs, a ratio the median of its passes.

Usage: python -m benchmarks.bench_latency_efficiency [--out benchmarks/results] [--runs 30] [--models a,b]
       [--threads 1] [--name latency_efficiency] [--render JSON,... --command CMD]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx

from benchmarks.bench_latency_breakdown import compare, paired_breakdown
from benchmarks.bench_latency_plan import zoo_model
from benchmarks.common import machine, write_results, zoo_arguments, zoo_cells
from onnxprune.flops import count_costs, count_params
from onnxprune.importance import Criterion
from onnxprune.latency.measure import paired_timing
from onnxprune.latency.profile import profile_model
from onnxprune.latency.table import MeasurementCache
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

REQUESTS = (0.7, 0.5)
GOAL = 0.95


def plans(request: float) -> dict[str, PlanOptions]:
    """The three plans compared at one request, by row label."""
    return {f"latency {request}": PlanOptions(target_latency=request),
            f"max-MACs {request}": PlanOptions(target_latency=request, global_ranking=True,
                                               criterion=Criterion.UNIFORM),
            f"macs {request}": PlanOptions(target_flops=request, round_to=8)}


def bench(name: str, threads: int, runs: int, windows: int, cache: Path) -> list[dict[str, object]]:
    model, shape = zoo_model(name)
    spec = InputSpec({"input": shape})
    cpu = TARGETS["cpu"]
    table = profile_model(model, cpu, threads, spec, MeasurementCache(cache))
    variants: dict[str, onnx.ModelProto] = {}
    info: dict[str, dict[str, object]] = {}
    for request in REQUESTS:
        for key, options in plans(request).items():
            t0 = time.perf_counter()
            result = prune(model, options, spec=spec, latency=table if options.needs_latency else None)
            variants[key] = result.model
            latency = result.report.latency
            info[key] = {"request": request, "plan_s": time.perf_counter() - t0,
                         "predicted": latency.predicted_ratio if latency is not None else None}
    passes: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(windows):
        for key, variant in variants.items():
            timing = paired_timing({"original": model, key: variant}, "original", cpu, threads, spec.shapes,
                                   min_rounds=runs)
            passes[key].append(timing.ratios[key])
    original_macs = count_costs(model, spec.shapes).macs
    kept_macs = {key: count_costs(variant, spec.shapes).macs for key, variant in variants.items()}
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as folder:   # where each plan's time goes
        kernels = {}
        for key, variant in variants.items():   # each plan with the original alone, as the paired timing runs them
            pair = paired_breakdown({"original": model, key: variant}, spec.shapes, runs, Path(folder), threads)
            kernels[key] = compare(pair["original"], pair[key], kept_macs[key] / original_macs)
    rows = []
    for key, variant in variants.items():
        achieved = statistics.median(passes[key])
        macs = kept_macs[key]
        rows.append({"model": name, "input": "x".join(map(str, shape)), "threads": threads, "variant": key,
                     "plan": key.split()[0], "achieved": achieved, "passes": passes[key], "macs": macs,
                     "macs_ratio": macs / original_macs, "params": count_params(variant),
                     "efficiency": (1 / achieved) / (original_macs / macs), "bound": kernels[key]["bound"],
                     "dense_efficiency": kernels[key]["dense_efficiency"], "excess": kernels[key]["excess"],
                     "profiled_efficiency": kernels[key]["efficiency"], **info[key]})
    return rows


def table_efficiency(row: dict[str, object]) -> float:
    """The efficiency the latency table predicts for a plan: what the layers' measured curves allow."""
    return (1 / row["predicted"]) * row["macs_ratio"]


def reason(row: dict[str, object]) -> str:
    """What holds a plan's efficiency below GOAL, from its profile (paired with the original's): the kernel class
    whose time is furthest above perfect scaling (see bench_latency_breakdown.compare); "" when that profile
    measured the plan at GOAL or above (nothing measured explains the paired timing's figure)."""
    if row.get("excess") is None:
        return "not profiled"
    if row["profiled_efficiency"] >= GOAL:
        return ""
    excess = row["excess"]
    return max(excess, key=lambda c: excess[c])


def held_back(row: dict[str, object]) -> str:
    """The reason with its share of the plan's time above perfect scaling, as the table shows it."""
    why = reason(row)
    if why in ("", "not profiled"):
        return why or "neither (profiled >= 0.95)"
    total = sum(row["excess"].values())
    return f"{why} ({row['excess'][why] / total:.0%})"


def _f(x: object) -> str:
    return "" if x is None else f"{x:.2f}"


def markdown(rows: list[dict[str, object]], runs: int, windows: int, command: str) -> str:
    lines = [("# Efficiency of latency plans: the default plan against the plan that keeps the most MACs "
              "(ONNX Runtime CPU)"), "", f"Command: `{command}`  ", f"Machine: {machine()}", "",
             (f"Batch 1, ORT optimizations on, spinning off, random inputs; each variant timed against the original "
              f"in a pair, interleaved, >= {runs} rounds (and 1 s), a pass's ratio the median over rounds of variant "
              f"/ original in the same round, {windows} passes, a ratio the median of its passes. *latency R*: "
              "`prune --target-latency R`; *max-MACs R*: `--target-latency R --global --criterion uniform` (the "
              "plan keeping the most MACs the measured layer curves allow, up to the greedy's gap); *macs R*: "
              "`--target-flops R --round-to 8`. achieved = measured latency / original's; efficiency = speedup / "
              "MACs reduction. *table eff.*: the efficiency the latency table predicts (1 / predicted ÷ MACs "
              "reduction). From a run under ORT's profiler of each plan with the original (same threads, --runs "
              "rounds, each running both once in a rotating order; benchmarks/bench_latency_breakdown.py): "
              "*profiled eff.*: the efficiency that run measured; *dense eff.*: the dense kernels' (Conv, "
              "Gemm, MatMul) speedup / their MACs reduction; *bound*: the efficiency if the dense kernels scaled "
              "exactly with their MACs and every other kernel and the executor took the time they measured; "
              "*held back by* (efficiency below 0.95): the kernel class whose time is furthest above perfect "
              "scaling (the original's time in the class x MACs kept; the classes' excesses sum to achieved - "
              "MACs kept; *padding*: the part of the dense kernels' excess from the MACs they compute with "
              "channels padded to ORT's NCHWc block, *dense*: the rest of it), with its share of the plan's whole excess (above 100% where other classes scaled better "
              "than their MACs); *neither* when the profile measured the plan "
              "at 0.95 or above."), "",
             ("| model | input | threads | variant | achieved | predicted | MACs kept | params | efficiency | "
              "table eff. | profiled eff. | dense eff. | bound | held back by |"),
             "|---" * 14 + "|"]
    for r in rows:
        predicted = "" if r["predicted"] is None else f"{r['predicted']:.3f}"
        table = "" if r["predicted"] is None else f"{table_efficiency(r):.2f}"
        why = held_back(r) if r["efficiency"] < GOAL else ""
        lines.append(f"| {r['model']} | {r['input']} | {r['threads']} | {r['variant']} | {r['achieved']:.3f} | "
                     f"{predicted} | {r['macs_ratio']:.3f} | {r['params'] / 1e6:.2f}M | {r['efficiency']:.2f} | "
                     f"{table} | {_f(r.get('profiled_efficiency'))} | {_f(r.get('dense_efficiency'))} | "
                     f"{_f(r.get('bound'))} | {why} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    keyed = {(r["model"], r["threads"], r["variant"]): r for r in rows}
    for threads in sorted({r["threads"] for r in rows}):
        for request in REQUESTS:
            cells = [(keyed.get((m, t, f"latency {request}")), keyed.get((m, t, f"max-MACs {request}")),
                      keyed.get((m, t, f"macs {request}")))
                     for m, t, v in keyed if t == threads and v == f"latency {request}"]
            cells = [c for c in cells if all(c)]
            if not cells:
                continue
            best = [max(c[:2], key=lambda r: r["efficiency"]) for c in cells]   # the better latency plan
            weak = [(b, c) for b, c in zip(best, cells, strict=True) if c[2]["efficiency"] < 0.9]
            met = [b["model"] for b, _ in weak if b["efficiency"] >= GOAL]
            missed = [b for b, _ in weak if b["efficiency"] < GOAL]
            why: dict[str, list[str]] = {}
            for b in missed:
                why.setdefault(reason(b), []).append(b["model"])
            near = [c[1] for c in cells if abs(c[1]["achieved"] / request - 1) <= 0.05]
            blamed = "; ".join(f"{k} in {len(v)} ({', '.join(v)})" for k, v in sorted(why.items()) if k
                               and k != "not profiled")
            text = (f"- {threads} thread(s), R = {request}: efficiency median "
                    f"{statistics.median([c[0]['efficiency'] for c in cells]):.2f} (latency plan), "
                    f"{statistics.median([c[1]['efficiency'] for c in cells]):.2f} (max-MACs), "
                    f"{statistics.median([c[2]['efficiency'] for c in cells]):.2f} (MACs plan); the better of the "
                    f"two latency plans >= {GOAL} in {sum(b['efficiency'] >= GOAL for b in best)}/{len(cells)} "
                    f"models. Where the MACs plan is below 0.9 ({len(weak)} models): >= {GOAL} in {len(met)} "
                    f"({', '.join(met) or '-'}); below in {len(missed)}, held back most (the better plan's paired "
                    f"profile) by: {blamed or '-'}; by neither (profiled >= {GOAL}) in {len(why.get('', []))} "
                    f"({', '.join(why.get('', [])) or '-'})")
            if why.get("not profiled"):
                text += f", not profiled in {len(why['not profiled'])}"
            out.append(text + f"; max-MACs plans within ±5% of the request: {len(near)}/{len(cells)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = zoo_arguments(__doc__, "latency_efficiency", windows=3)
    ap.set_defaults(threads="1")
    ap.add_argument("--render", default=None, metavar="JSON[,JSON...]",
                    help="re-render the markdown of stored runs (rows concatenated) into --out, timing nothing; "
                         "--runs, --windows and --command must be those of the runs")
    ap.add_argument("--command", default=None, help="with --render: the command that measured the runs")
    args = ap.parse_args(argv)
    if args.render is not None:
        if args.command is None:
            ap.error("--render needs --command (the command that measured the runs)")
        rows = [row for p in args.render.split(",") if p for row in json.loads(Path(p).read_text())]
        write_results(args.out, args.name, rows, markdown(rows, args.runs, args.windows, args.command))
        return 0
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as cache:
        rows = zoo_cells(args.models, args.threads,
                         lambda name, n: bench(name, n, args.runs, args.windows, Path(cache)),
                         lambda got: ", ".join(f"{r['variant']} {r['achieved']:.3f} eff {r['efficiency']:.2f}"
                                               for r in got))
    command = "python -m benchmarks.bench_latency_efficiency " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.out, args.name, rows, markdown(rows, args.runs, args.windows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
