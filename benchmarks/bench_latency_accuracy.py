"""Accuracy of the latency plan against the MACs plan at the same measured latency, on tasks that do not saturate.

The digits models forgive everything (their test split differs by 1-4 of 450 images between plans), so this
runs the two models of ``models/hard``: ``glyphs`` (47-class rendered glyphs, top-1 87.5%) and ``textline``
(rendered text lines, conv + attention + CTC, exact-line accuracy and character error rate). For each, with 1
thread and R = 0.7 and 0.5:

- latency: ``prune --target-latency R --recover lsq`` (profiled here; recovery fitted on the 256-sample
  calibration split);
- sensitivity: the same with ``--allocate sensitivity`` (each group's loss measured on the calibration split at
  its latency steps shares the budget);
- macs@same / macs@sens: ``--target-flops F --round-to 8 --recover lsq`` with F bisected until the pruned model's
  *measured* latency is closest to the latency plan's / the sensitivity plan's (each candidate timed against the
  original);

then each variant timed against the original in a pair (interleaved, >= --runs rounds), and scored on the
held-out test split (glyphs 1000 images, textline 600 lines).

Usage: python -m benchmarks.bench_latency_accuracy [--out benchmarks/results] [--runs 30] [--models glyphs,textline]
Writes latency_accuracy.json and latency_accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

import onnxprune
from benchmarks.bench_hard import HARD, score
from benchmarks.bench_latency_plan import macs_plan_at_measured, measured_ratio
from benchmarks.common import machine
from onnxprune.data import load_data
from onnxprune.flops import count_costs
from onnxprune.latency.measure import paired_timing
from onnxprune.latency.profile import profile_model
from onnxprune.latency.table import MeasurementCache
from onnxprune.normalize import normalize
from onnxprune.plan import Allocate, PlanOptions
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

REQUESTS = (0.7, 0.5)
THREADS = 1


def scored(model: onnx.ModelProto, name: str, folder: Path) -> dict[str, float]:
    path = folder / f"{name}-{time.monotonic_ns()}.onnx"
    onnx.save(model, str(path))
    return score(path, name)


def bench(name: str, runs: int, cache: Path, folder: Path) -> list[dict[str, object]]:
    model = onnxprune.fold(normalize(onnx.load(str(HARD / f"{name}.onnx")))).model
    calib = load_data(HARD / f"{name}_calib.npz", model)
    shape = (1, *np.load(HARD / f"{name}_test.npz")["input"].shape[1:])
    spec = InputSpec({model.graph.input[0].name: shape})
    table = profile_model(model, TARGETS["cpu"], THREADS, spec, MeasurementCache(cache))
    variants: dict[str, onnx.ModelProto] = {}
    info: dict[str, dict[str, object]] = {}
    for request in REQUESTS:
        for kind, allocate, macs_key in (("latency", Allocate.WEIGHTS, "macs@same"),
                                         ("sensitivity", Allocate.SENSITIVITY, "macs@sens")):
            t0 = time.perf_counter()
            result = prune(model, PlanOptions(target_latency=request, allocate=allocate), spec=spec, latency=table,
                           recover_with=Recover.LSQ, data=calib)
            variants[f"{kind} {request}"] = result.model
            info[f"{kind} {request}"] = {"request": request, "predicted": result.report.latency.predicted_ratio,
                                         "plan_s": time.perf_counter() - t0}
            achieved = measured_ratio(model, result.model, THREADS, spec.shapes)
            flops, same = macs_plan_at_measured(model, achieved, THREADS, spec, Recover.LSQ, calib)
            variants[f"{macs_key} {request}"] = same
            info[f"{macs_key} {request}"] = {"request": request, "target_flops": flops}
    macs0 = count_costs(model, spec.shapes).macs
    rows = [{"model": name, "variant": "original", "achieved": 1.0, "macs": macs0, **scored(model, name, folder)}]
    for key, variant in variants.items():
        timing = paired_timing({"original": model, key: variant}, "original", TARGETS["cpu"], THREADS, spec.shapes,
                               min_rounds=runs)
        rows.append({"model": name, "variant": key, "achieved": timing.ratios[key], "rounds": timing.rounds,
                     "macs": count_costs(variant, spec.shapes).macs, **info[key], **scored(variant, name, folder)})
    return rows


def quality(row: dict[str, object]) -> str:
    if "accuracy" in row:
        return f"{float(row['accuracy']):.2%}"
    return f"{float(row['line-accuracy']):.2%} (CER {float(row['cer']):.2%})"


def markdown(rows: list[dict[str, object]], runs: int, command: str) -> str:
    lines = ["# Latency plan vs MACs plan at the same measured latency: accuracy on the hard models", "",
             f"Command: `{command}`  ", f"Machine: {machine()}", "",
             (f"ONNX Runtime CPU, {THREADS} thread, batch 1; each variant timed against the original in a pair, "
              f"interleaved, >= {runs} rounds, the ratio the median over rounds of variant / original in the same round. Recovery (`--recover lsq`) fitted on the calibration split "
              "(256 samples); accuracy on the held-out test split (glyphs: 1000 images, top-1; textline: 600 lines, "
              "exact-line accuracy and character error rate). *latency R*: `--target-latency R` (budget shared by "
              "weights); *sensitivity R*: the same with `--allocate sensitivity` (by the loss measured on the "
              "calibration split at each group's steps). *macs@same R* / *macs@sens R*: `--target-flops F --round-to 8` "
              "with F bisected to the latency / sensitivity plan's measured latency. One run: each plan depends on "
              "the table profiled in it, and the weights plan of textline at 0.5 measured 39-56% line accuracy "
              "over four runs."), "",
             "| model | variant | achieved | MACs | accuracy |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {float(r['achieved']):.3f} | "
                     f"{float(r['macs']) / 1e6:.1f}M | {quality(r)} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    for r in rows:
        kind = str(r["variant"]).split(" ")[0]
        if kind not in ("latency", "sensitivity"):
            continue
        request = r["request"]
        macs_key = "macs@same" if kind == "latency" else "macs@sens"
        other = next((o for o in rows if o["model"] == r["model"] and o["variant"] == f"{macs_key} {request}"), None)
        if other is None:
            continue
        key = "accuracy" if "accuracy" in r else "line-accuracy"
        diff = float(r[key]) - float(other[key])
        out.append(f"- {r['model']}, {request}: {kind} plan {quality(r)} at {float(r['achieved']):.3f}; MACs plan "
                   f"{quality(other)} at {float(other['achieved']):.3f} ({diff * 100:+.1f} points)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", default="glyphs,textline")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, args.runs, Path(tmp) / "cache", Path(tmp))
            print(summary([r for r in rows if r["model"] == name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_accuracy.json").write_text(json.dumps(rows, indent=1) + "\n")
    command = "python -m benchmarks.bench_latency_accuracy" + (" " + " ".join(argv if argv is not None else
                                                                               sys.argv[1:])).rstrip()
    (args.out / "latency_accuracy.md").write_text(markdown(rows, args.runs, command))
    print(f"wrote {args.out / 'latency_accuracy.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
