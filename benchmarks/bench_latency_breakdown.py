"""Where the time goes: why a MACs cut does not turn into the same speedup on ONNX Runtime CPU.

For every zoo model (folded legacy export, input as in bench_latency_plan, 1 thread), the original, the latency
plan (`prune --target-latency R`) and the MACs plan (`--target-flops R --round-to 8`) are each run under ORT's
profiler alternating run by run with the original, as the paired timing runs them (the session options every
latency measurement uses, optimizations on, batch 1, random inputs). Each
kernel's time is put in one class, from the op ORT ran and its weight shape:

- dense: Conv (not depthwise), ConvTranspose, Gemm, MatMul and their fused forms: the MACs a pruning plan cuts;
- depthwise: Conv with one input channel per group (memory-bound: its time scales with channels, not MACs^2);
- layout: ReorderInput/ReorderOutput/Transpose (the NCHWc blocked layout ORT converts to and from);
- data movement: Concat, Split, Slice, Reshape, Pad, Resize, Gather and kin (copies; no MACs);
- other kernels: activations, pooling, elementwise arithmetic, normalization;
- outside kernels: the run's time minus its kernels' (session and executor overhead per op and per run).

Per variant: each class's mean ms per run and share; dense MACs (from the kernels' own shapes: what they compute,
channels padded to the NCHWc block included). For each plan: the time ratio of each class against the original,
the dense kernels' own efficiency (speedup of dense time / reduction of the MACs they compute), and the *bound*:
the efficiency the model would reach if its dense kernels scaled exactly with the model's MACs and everything
else took the time it measured. A bound below 0.95 says the goal of
efficiency >= 0.95 is out of reach by pruning channels alone, and which class holds it back.

Profiling adds a little time per kernel (the same for every variant); shares are of the profiled runs.

Usage: python -m benchmarks.bench_latency_breakdown [--out benchmarks/results] [--runs 50] [--models a,b]
       [--request 0.7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.bench_latency_plan import zoo_model
from benchmarks.common import machine
from onnxprune.flops import count_costs
from onnxprune.latency.measure import random_feeds
from onnxprune.latency.profile import profile_model
from onnxprune.latency.table import MeasurementCache
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.targets import TARGETS, session_options
from onnxprune.verify import InputSpec

CLASSES = ("dense", "depthwise", "layout", "data movement", "other kernels", "outside kernels")
DENSE_OPS = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul",
             "QLinearConv", "MatMulInteger", "ConvInteger"}
LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "Transpose"}
MOVEMENT_OPS = {"Concat", "Split", "Slice", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Resize",
                "Upsample", "Gather", "Expand", "Tile", "Identity", "Shape", "DepthToSpace", "SpaceToDepth"}


def _shapes(args: dict, key: str) -> list[list[int]]:
    return [next(iter(s.values())) for s in args.get(key, [])]


def classify(op: str, args: dict, weight: list[int] | None = None) -> tuple[str, int]:
    """(class, MACs) of one kernel from ORT's profile event (op name, input and output shapes); ``weight``: the
    node's weight shape from the model, for kernels whose prepacked weight the event does not list."""
    inputs, outputs = _shapes(args, "input_type_shape"), _shapes(args, "output_type_shape")
    conv = op in ("Conv", "FusedConv", "NchwcConv", "ConvTranspose", "QLinearConv", "ConvInteger")
    w = inputs[1] if len(inputs) >= 2 and len(inputs[1]) >= 3 else weight
    if op in DENSE_OPS and conv and inputs and outputs and w is not None and len(w) >= 3:
        x, y = inputs[0], outputs[0]
        if op == "ConvTranspose":
            return "dense", int(np.prod(x)) * int(np.prod(w[1:]))
        if w[1] == 1 and len(x) > 1 and x[1] > 1 and w[0] == y[1]:
            return "depthwise", int(np.prod(y)) * int(np.prod(w[1:]))
        return "dense", int(np.prod(y)) * int(np.prod(w[1:]))
    if op in DENSE_OPS and not conv and inputs and outputs:
        # Gemm/MatMul: output size x inner dimension (a prepacked constant weight is not listed; transA unseen)
        return "dense", int(np.prod(outputs[0])) * int(inputs[0][-1])
    if op in DENSE_OPS:
        return "dense", 0   # shapes not listed: the time is counted, the MACs are not
    if op in LAYOUT_OPS:
        return "layout", 0
    if op in MOVEMENT_OPS:
        return "data movement", 0
    return "other kernels", 0


def breakdown(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], runs: int, folder: Path,
              threads: int = 1) -> dict[str, float]:
    """Mean ms per run of each class, the run's median ms and the dense MACs, from ORT's profiler."""
    return paired_breakdown({"model": model}, shapes, runs, folder, threads)["model"]


def paired_breakdown(models: dict[str, onnx.ModelProto], shapes: dict[str, tuple[int, ...]], runs: int,
                     folder: Path, threads: int = 1) -> dict[str, dict[str, float]]:
    """:func:`breakdown` of models profiled in the same stretch of time: each round runs every model once, the
    order rotating between rounds, so a busy spell of a shared machine falls on all of them alike (profiled one
    after the other, one U-Net plan measured 0.69, 0.92 and 0.98 efficiency in three runs where the paired timing
    measured 1.00-1.02). Profile a plan with the original alone, as the paired timing runs them: with seven models
    in the rotation each run found the caches the six others had left, and the profiled efficiencies came out
    0.64-1.60x the paired timing's (the two-model profile: within 0.03 of it)."""
    warmup = 5
    sessions, feeds = {}, {}
    for i, (key, model) in enumerate(models.items()):
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(folder / f"ort-profile-{i}")   # one file per session, never shared
        sessions[key] = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds[key] = random_feeds(sessions[key], shapes, seed=0)
    keys = list(models)
    for r in range(warmup + runs):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            sessions[key].run(None, feeds[key])
    out = {}
    for key, session in sessions.items():
        path = Path(session.end_profiling())
        events = json.loads(path.read_text())
        path.unlink()
        out[key] = _classes(events, models[key], warmup)
    return out


def _classes(events: list[dict], model: onnx.ModelProto, warmup: int) -> dict[str, float]:
    """One session's profile, its first ``warmup`` runs left out: the classes' mean ms per run (see the module
    doc), the run's mean and median ms, the dense and depthwise MACs per run and the number of runs."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = starts[warmup]   # the warm-up runs' events are left out
    events = [e for e in events if e.get("ts", 0) >= cutoff]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    weights = {n.name: inits[n.input[1]] for n in model.graph.node if len(n.input) > 1 and n.input[1] in inits}
    totals = dict.fromkeys(CLASSES, 0.0)
    macs = {"dense": 0, "depthwise": 0}
    run_us = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    kernels_us = 0.0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        cls, m = classify(e["args"].get("op_name", ""), e["args"], weights.get(e["name"][:-len("_kernel_time")]))
        totals[cls] += e["dur"]
        kernels_us += e["dur"]
        if cls in macs:
            macs[cls] += m
    n = len(run_us)
    totals["outside kernels"] = max(0.0, sum(run_us) - kernels_us)
    out = {cls: totals[cls] / n / 1000 for cls in CLASSES}
    out.update(run_ms=sum(run_us) / n / 1000, median_ms=statistics.median(run_us) / 1000,
               dense_macs=macs["dense"] / n, depthwise_macs=macs["depthwise"] / n, runs=n)
    return out


def compare(original: dict[str, float], variant: dict[str, float], macs_ratio: float) -> dict[str, object]:
    """Achieved ratio, efficiency, the dense kernels' own efficiency, the bound (see the module doc), and each
    class's *excess* (``excess``): its time above perfect scaling (the original's time in that class x
    ``macs_ratio``, the MACs kept as the model counts them), as a fraction of the original's run. The dense
    kernels' excess is split in two: *padding* (the MACs they compute, counted from the kernels' own shapes, fall
    less than the model's: ORT's NCHWc kernels pad channels to the block, 8 or 16; a ResNet-56 plan rounded to 8
    kept 0.54 of the MACs and its kernels computed 0.77) and *dense* (their time above the MACs they compute). The
    excesses sum exactly to achieved - MACs kept, so efficiency is below 1 exactly when they sum above 0, and the
    largest says what holds the plan back most."""
    kernel_macs = (variant["dense_macs"] / original["dense_macs"]) if original["dense_macs"] else macs_ratio
    dense_time = variant["dense"] / original["dense"]
    achieved = variant["run_ms"] / original["run_ms"]
    ideal_ms = original["dense"] * macs_ratio + sum(variant[c] for c in CLASSES if c != "dense")
    excess = {c: (variant[c] - original[c] * macs_ratio) / original["run_ms"] for c in CLASSES}
    padding = original["dense"] * (kernel_macs - macs_ratio) / original["run_ms"]
    excess = {"padding": padding, **excess, "dense": excess["dense"] - padding}
    return {"achieved": achieved, "macs_ratio": macs_ratio, "kernel_macs_ratio": kernel_macs,
            "efficiency": macs_ratio / achieved, "dense_efficiency": kernel_macs / dense_time, "excess": excess,
            "bound": macs_ratio / (ideal_ms / original["run_ms"]),
            **{f"{c} ratio": (variant[c] / original[c] if original[c] > 0 else float("nan")) for c in CLASSES}}


def bench(name: str, runs: int, request: float, cache: Path, folder: Path) -> dict[str, object]:
    model, shape = zoo_model(name)
    spec = InputSpec({"input": shape})
    table = profile_model(model, TARGETS["cpu"], 1, spec, MeasurementCache(cache))
    plans = {"latency": prune(model, PlanOptions(target_latency=request), spec=spec, latency=table).model,
             "macs": prune(model, PlanOptions(target_flops=request, round_to=8), spec=spec).model}
    pairs = {key: paired_breakdown({"original": model, key: m}, spec.shapes, runs, folder) for key, m in plans.items()}
    original = next(iter(pairs.values()))["original"]
    macs = count_costs(model, spec.shapes).macs
    return {"model": name, "input": "x".join(map(str, shape)), "request": request, "original": original,
            **{key: {**pair[key], **compare(pair["original"], pair[key],
                                            count_costs(plans[key], spec.shapes).macs / macs)}
               for key, pair in pairs.items()}}


def _pct(x: float) -> str:
    return f"{x:.0%}"


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = ["# Where the time goes: the latency of each kernel class, original and pruned (ORT CPU, 1 thread)", "",
             f"Command: `{command}`  ", f"Machine: {machine()}", "",
             ("Kernel times from ORT's profiler (optimizations on, batch 1, random inputs), mean of the profiled "
              "runs. *share*: of the original's run time. *x*: the class's time in the pruned model / in the "
              "original. *dense eff.*: the dense kernels' speedup / their MACs reduction. *bound*: the model's "
              "efficiency if its dense kernels scaled exactly with their MACs and every other class took the time "
              "it measured: what channel pruning can reach at best. *efficiency*: speedup / MACs reduction (dense + "
              "depthwise MACs, as the kernels ran)."), "",
             "| model | input | ms | dense | depthwise | layout | data movement | other kernels | outside kernels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r["original"]
        lines.append(f"| {r['model']} | {r['input']} | {o['run_ms']:.2f} | "
                     + " | ".join(_pct(o[c] / o["run_ms"]) for c in CLASSES) + " |")
    lines += ["", ("| model | plan | achieved | MACs | efficiency | dense eff. | bound | dense x | depthwise x | "
                   "layout x | data movement x | other x | outside x |"), "|---" * 13 + "|"]
    for r in rows:
        for key in ("latency", "macs"):
            v = r[key]
            ratios = " | ".join("" if v[f"{c} ratio"] != v[f"{c} ratio"] else f"{v[f'{c} ratio']:.2f}" for c in CLASSES)
            lines.append(f"| {r['model']} | {key} {r['request']} | {v['achieved']:.3f} | {v['macs_ratio']:.3f} | "
                         f"{v['efficiency']:.2f} | {v['dense_efficiency']:.2f} | {v['bound']:.2f} | {ratios} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    lat = [r["latency"] for r in rows]
    below = [r["model"] for r in rows if r["latency"]["bound"] < 0.95]
    return "\n".join([
        (f"- latency plans: efficiency median {statistics.median(v['efficiency'] for v in lat):.2f}; "
         f"the dense kernels' own efficiency median {statistics.median(v['dense_efficiency'] for v in lat):.2f}; "
         f"bound median {statistics.median(v['bound'] for v in lat):.2f}"),
        (f"- bound below 0.95 (out of reach by channel pruning on this runtime) in {len(below)} of {len(rows)} "
         f"models: {', '.join(below)}"),
        ("- share of the original's time outside dense kernels: median "
         f"{statistics.median(1 - r['original']['dense'] / r['original']['run_ms'] for r in rows):.0%}")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", default=None, help="zoo models (default: all)")
    ap.add_argument("--request", type=float, default=0.7)
    ap.add_argument("--name", default="latency_breakdown")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from models.architectures import ZOO

    models = [m for m in (args.models.split(",") if args.models else list(ZOO)) if m]
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as tmp:
        for name in models:
            try:
                row = bench(name, args.runs, args.request, Path(tmp) / "cache", Path(tmp))
            except Exception as e:   # noqa: BLE001 -- a model that fails is recorded, the others still run
                print(f"{name}: failed: {type(e).__name__}: {e}", flush=True)
                continue
            rows.append(row)
            o = row["original"]
            print(f"{name}: dense {o['dense'] / o['run_ms']:.0%} of {o['run_ms']:.2f} ms; latency plan "
                  f"efficiency {row['latency']['efficiency']:.2f}, bound {row['latency']['bound']:.2f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_latency_breakdown " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(rows, command.strip()))
    print(f"wrote {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
