"""How close the latency table's prediction comes to the measured latency, with and without the call correction.

Each layer of a latency table is timed alone, as a one-layer session, and pays one session call (about 4 us on
this project's machines) that the model pays once in all; ``LatencyTable.call_ms`` measures that call and the
latency model subtracts it from every layer (*net*). *gross*: the same table with the layers summed as timed
(``call_ms`` 0, the calibration sums recomputed so), as before the correction. Both predict the same plans, and
are compared with the same measurements.

For every zoo model (folded legacy export, input as in bench_latency_plan) and 1 and 2 threads: the model is
profiled once; plans for latency budgets 0.8, 0.65, 0.5, 0.35 (the table's plan, not corrected by measurement)
and the smallest steps are rewritten and timed against the original (paired, interleaved, --windows windows of
>= --runs rounds and 1 s, a plan's ratio the mean of its windows). error = predicted / measured - 1.

Usage: python -m benchmarks.bench_latency_prediction [--out benchmarks/results] [--runs 30] [--windows 2]
       [--models a,b] [--threads 1,2] [--name latency_prediction]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.bench_latency_plan import zoo_model
from benchmarks.common import machine
from onnxprune.channels.analysis import ChannelAnalysis, analyze
from onnxprune.importance import Criterion, score_groups
from onnxprune.latency.measure import paired_timing
from onnxprune.latency.model import LatencyModel
from onnxprune.latency.profile import calibration_counts, profile_model
from onnxprune.latency.table import LatencyTable, MeasurementCache
from onnxprune.plan import PlanOptions, make_plan, smallest_steps_plan
from onnxprune.pruning import _rewrite
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

BUDGETS = (0.8, 0.65, 0.5, 0.35)
PREDICTORS = ("net", "gross")


def gross_table(analysis: ChannelAnalysis, table: LatencyTable) -> LatencyTable:
    """``table`` with its layers summed as timed (no call correction), calibrated on the same measurements."""
    gross = replace(table, call_ms=0.0)
    counts = calibration_counts(analysis, LatencyModel(analysis, table))
    latency = LatencyModel(analysis, gross)
    by_id = {g.id: g for g in analysis.prunable}
    points = []
    for ratio, _, measured in table.calibration:
        removed = np.zeros(len(analysis.roots), dtype=bool) if ratio == 0 else \
            latency.removed_for(counts[ratio], by_id)
        points.append((ratio, latency.layers_ms(removed), measured))
    return replace(gross, calibration=tuple(points))


def cell(name: str, threads: int, runs: int, windows: int, cache: Path) -> list[dict[str, object]]:
    model, shape = zoo_model(name)
    spec = InputSpec({"input": shape})
    analysis = analyze(model, spec.shapes)
    table = profile_model(model, TARGETS["cpu"], threads, spec, MeasurementCache(cache), analysis)
    scores = score_groups(analysis, Criterion.L1, 0, None, model)
    latency = {"net": LatencyModel(analysis, table).with_scores(scores),
               "gross": LatencyModel(analysis, gross_table(analysis, table)).with_scores(scores)}
    plans = {f"budget {b}": make_plan(analysis, scores, PlanOptions(target_latency=b), latency=latency["net"])
             for b in BUDGETS}
    plans["smallest steps"] = smallest_steps_plan(analysis, scores, PlanOptions(target_latency=0.5), latency["net"])
    variants = {"original": model}
    for key, plan in plans.items():
        variants[key], _ = _rewrite(model, plan, analysis, input_shapes=spec.shapes)
    passes = [paired_timing(variants, "original", TARGETS["cpu"], threads, spec.shapes, runs, 1.0).ratios
              for _ in range(windows)]
    rows = []
    for key, plan in plans.items():
        removed = plan.removed_roots(analysis)
        measured = statistics.fmean(p[key] for p in passes)
        predicted = {k: m.predict(removed) / m.full_ms for k, m in latency.items()}
        rows.append({"model": name, "input": "x".join(map(str, shape)), "threads": threads, "plan": key,
                     "measured": measured, "passes": [p[key] for p in passes], "call_us": table.call_ms * 1000,
                     "model_ms": table.model_ms, **{f"predicted_{k}": v for k, v in predicted.items()},
                     **{f"fit_{k}": list(m.table.fit()) for k, m in latency.items()}})
    return rows


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = ["# Latency prediction with and without the session-call correction (ONNX Runtime CPU)", "",
             f"Command: `{command}`  ", f"Machine: {machine()}", "",
             ("Batch 1, ORT optimizations on, spinning off, random inputs. *net*: layers less one session call each "
             "(`call_ms`, measured with the table); *gross*: layers summed as timed (before the correction), "
             "calibrated on the same measurements. measured: the plan against the original, paired, interleaved, "
             "mean of its windows. error = predicted / measured - 1."), "",
             "| model | input | threads | model ms | call us | plan | measured | net | error | gross | error |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["measured"]
        lines.append(f"| {r['model']} | {r['input']} | {r['threads']} | {r['model_ms']:.3f} | {r['call_us']:.1f} | "
                     f"{r['plan']} | {m:.3f} | {r['predicted_net']:.3f} | {r['predicted_net'] / m - 1:+.1%} | "
                     f"{r['predicted_gross']:.3f} | {r['predicted_gross'] / m - 1:+.1%} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    for threads in sorted({r["threads"] for r in rows}):
        cells = [r for r in rows if r["threads"] == threads]
        err = {k: [abs(r[f"predicted_{k}"] / r["measured"] - 1) for r in cells] for k in PREDICTORS}
        closer = sum(n < g for n, g in zip(err["net"], err["gross"]))
        models = len({r["model"] for r in cells})
        out.append(f"- {threads} thread(s), {len(cells)} plans on {models} models: |error| median net "
                   f"{statistics.median(err['net']):.1%}, gross {statistics.median(err['gross']):.1%}; within ±10% "
                   f"net {sum(e <= 0.10 for e in err['net'])}/{len(cells)}, gross "
                   f"{sum(e <= 0.10 for e in err['gross'])}/{len(cells)}; net closer in {closer}/{len(cells)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--models", default=None, help="zoo models (default: all)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--name", default="latency_prediction")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from models.architectures import ZOO

    models = [m for m in (args.models.split(",") if args.models is not None else list(ZOO)) if m]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as cache:
        for name in models:
            for threads in (int(t) for t in args.threads.split(",")):
                try:
                    got = cell(name, threads, args.runs, args.windows, Path(cache))
                except Exception as e:   # a model that cannot be planned is recorded, the others still run
                    print(f"{name} ({threads} threads): failed: {type(e).__name__}: {e}", flush=True)
                    continue
                rows += got
                print(f"{name} ({threads} threads): " + ", ".join(
                    f"{r['plan']} {r['measured']:.3f} net {r['predicted_net']:.3f} gross {r['predicted_gross']:.3f}"
                    for r in got), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_latency_prediction " + " ".join(argv if argv is not None else sys.argv[1:])
    for suffix, text in ((".json", json.dumps(rows, indent=2) + "\n"), (".md", markdown(rows, command.strip()))):
        path = args.out / f"{args.name}{suffix}"
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"wrote {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
