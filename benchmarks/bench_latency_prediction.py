"""How close the latency table's prediction comes to the measured latency, by how layers are timed.

A latency table times each prunable layer alone, as a one-layer session (``onnxprune.latency.profile``):

- *wall* (the default): the session run's wall time, less one session call (``LatencyTable.call_ms``);
- *gross*: the same table with the layers summed as timed (no call subtracted; the calibration sums recomputed
  so, the same measurements): the latency model before the call correction;
- *kernel* (``LayerTiming.KERNEL``, CPU): its kernels' time from ORT's profiler, without the layout changes into and
  out of ORT's blocked format that a one-layer graph adds (a graph of convs stays blocked between them) and
  without the session call; a table profiled separately.

For every zoo model (folded legacy export, input as in bench_latency_plan) and 1 and 2 threads: the model is
profiled both ways; the wall and kernel tables each plan for latency budgets 0.8, 0.65, 0.5, 0.35 (the table's
plan, not corrected by measurement) and the smallest steps; all these plans are rewritten and timed against the
original in one run (paired, interleaved, --windows windows of >= --runs rounds and 1 s, a plan's ratio the mean
of its windows), and every predictor predicts every plan. error = predicted / measured - 1.

Usage: python -m benchmarks.bench_latency_prediction [--out benchmarks/results] [--runs 30] [--windows 2]
       [--models a,b] [--threads 1,2] [--name latency_prediction]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.bench_latency_plan import zoo_model
from benchmarks.common import machine, write_results, zoo_arguments, zoo_cells
from onnxprune.channels.analysis import ChannelAnalysis, analyze
from onnxprune.importance import Criterion, score_groups
from onnxprune.latency.measure import paired_timing
from onnxprune.latency.model import LatencyModel
from onnxprune.latency.profile import LayerTiming, calibration_counts, profile_model
from onnxprune.latency.table import LatencyTable, MeasurementCache
from onnxprune.plan import PlanOptions, make_plan, smallest_steps_plan
from onnxprune.pruning import _rewrite
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

BUDGETS = (0.8, 0.65, 0.5, 0.35)
PREDICTORS = ("wall", "gross", "kernel")
PLANNERS = ("wall", "kernel")


def gross_table(analysis: ChannelAnalysis, table: LatencyTable) -> LatencyTable:
    """``table`` with its layers summed as timed (no call subtracted), calibrated on the same measurements."""
    gross = replace(table, call_ms=0.0)
    counts = calibration_counts(analysis, LatencyModel(analysis, table))
    latency = LatencyModel(analysis, gross)
    by_id = {g.id: g for g in analysis.prunable}
    points = []
    for ratio, _, measured in table.calibration:
        removed = latency.removed_for(counts[ratio], by_id) if ratio else np.zeros(len(analysis.roots), dtype=bool)
        points.append((ratio, latency.layers_ms(removed), measured))
    return replace(gross, calibration=tuple(points))


def cell(name: str, threads: int, runs: int, windows: int, cache: Path) -> list[dict[str, object]]:
    model, shape = zoo_model(name)
    spec = InputSpec({"input": shape})
    analysis = analyze(model, spec.shapes)
    scores = score_groups(analysis, Criterion.L1, 0, None, model)
    tables = {t.value: profile_model(model, TARGETS["cpu"], threads, spec, MeasurementCache(cache), analysis, t)
              for t in LayerTiming}
    tables["gross"] = gross_table(analysis, tables["wall"])
    latency = {k: LatencyModel(analysis, tables[k]).with_scores(scores) for k in PREDICTORS}
    plans = {}
    for k in PLANNERS:
        lat = latency[k]
        plans |= {(k, f"budget {b}"): make_plan(analysis, scores, PlanOptions(target_latency=b), latency=lat)
                  for b in BUDGETS}
        plans[(k, "smallest steps")] = smallest_steps_plan(analysis, scores, PlanOptions(target_latency=0.5), lat)
    variants = {"original": model}
    for (k, key), plan in plans.items():
        variants[f"{k} {key}"], _ = _rewrite(model, plan, analysis, input_shapes=spec.shapes)
    passes = [paired_timing(variants, "original", TARGETS["cpu"], threads, spec.shapes, runs, 1.0).ratios
              for _ in range(windows)]
    rows = []
    for (k, key), plan in plans.items():
        removed = plan.removed_roots(analysis)
        measured = statistics.fmean(p[f"{k} {key}"] for p in passes)
        rows.append({"model": name, "input": "x".join(map(str, shape)), "threads": threads, "planned_by": k,
                     "plan": key, "measured": measured, "passes": [p[f"{k} {key}"] for p in passes],
                     "call_us": tables["wall"].call_ms * 1000,
                     "model_ms": {t: tables[t].model_ms for t in PLANNERS},
                     **{f"predicted_{t}": m.predict(removed) / m.full_ms for t, m in latency.items()},
                     **{f"fit_{t}": list(m.table.fit()) for t, m in latency.items()}})
    return rows


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = ["# Latency prediction by how layers are timed (ONNX Runtime CPU)", "",
             f"Command: `{command}`  ", f"Machine: {machine()}", "",
             ("Batch 1, ORT optimizations on, spinning off, random inputs. *wall* (the default): each layer its "
              "session run less one session call (call us); *gross*: the same table, layers summed as timed (before "
              "the call correction); *kernel*: each layer its kernels' time (ORT's profiler), layout changes and the "
              "session call left out, a table profiled separately (model ms: the whole model in each profile). The "
              "wall and kernel tables each plan for the budgets and the smallest steps; every plan is timed against "
              "the original (paired, interleaved, mean of its windows) and predicted by all three. "
              "error = predicted / measured - 1."), "",
             ("| model | input | threads | model ms (wall / kernel) | call us | planned by | plan | measured "
              "| wall | error | gross | error | kernel | error |"), "|---" * 14 + "|"]
    for r in rows:
        m = r["measured"]
        cols = " | ".join(f"{r[f'predicted_{k}']:.3f} | {r[f'predicted_{k}'] / m - 1:+.1%}" for k in PREDICTORS)
        lines.append(f"| {r['model']} | {r['input']} | {r['threads']} | {r['model_ms']['wall']:.3f} / "
                     f"{r['model_ms']['kernel']:.3f} | {r['call_us']:.1f} | {r['planned_by']} | {r['plan']} | "
                     f"{m:.3f} | {cols} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    for threads in sorted({r["threads"] for r in rows}):
        cells = [r for r in rows if r["threads"] == threads]
        err = {k: [abs(r[f"predicted_{k}"] / r["measured"] - 1) for r in cells] for k in PREDICTORS}
        models = len({r["model"] for r in cells})
        each = "; ".join(f"{k} median {statistics.median(e):.1%}, within ±10% {sum(x <= 0.10 for x in e)}/{len(e)}"
                         for k, e in err.items())
        out.append(f"- {threads} thread(s), {len(cells)} plans on {models} models, |error|: {each}; wall closer than "
                   f"gross in {sum(w < g for w, g in zip(err['wall'], err['gross']))}, kernel closer than wall in "
                   f"{sum(k < w for k, w in zip(err['kernel'], err['wall']))}")
        for k in PLANNERS:
            own = [r for r in cells if r["planned_by"] == k and r["plan"] != "smallest steps"]
            out.append(f"  - plans by the {k} table for a budget: measured / budget median "
                       f"{statistics.median(r['measured'] / float(r['plan'].split()[-1]) for r in own):.3f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = zoo_arguments(__doc__, "latency_prediction", windows=2).parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as cache:
        rows = zoo_cells(args.models, args.threads,
                         lambda name, threads: cell(name, threads, args.runs, args.windows, Path(cache)),
                         lambda got: ", ".join(f"{r['planned_by']} {r['plan']} {r['measured']:.3f} " + " ".join(
                             f"{k} {r[f'predicted_{k}']:.3f}" for k in PREDICTORS) for r in got))
    command = "python -m benchmarks.bench_latency_prediction " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.out, args.name, rows, markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
