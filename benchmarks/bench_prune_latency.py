"""Latency after filter pruning on ONNX Runtime CPU, side by side with Torch-Pruning.

For every zoo model: the PyTorch model is exported with BatchNorm kept, folded by `onnxprune fold`, and
pruned by `onnxprune prune --ratio R` (L1) with and without `--round-to 8`, for R = 0.3 and 0.5. The same
PyTorch model is pruned by Torch-Pruning (MetaPruner, GroupMagnitudeImportance p=1, the output layer ignored)
at the same ratios and exported with the legacy exporter (which folds BN). Every variant of one model runs in
one process, interleaved (order rotated per round), ORT graph optimizations on, intra-op spinning off, batch 1,
1 and 2 threads; medians of --runs rounds after a warm-up.

- speedup = median(original) / median(variant); efficiency = speedup / (MACs original / MACs variant)
- pruning time: onnxprune in-process `prune()` on the loaded model (analysis + plan + rewrite + shape
  inference + MAC report) vs Torch-Pruning's MetaPruner construction + step()
- kept filters: for convs pruned by both, the share of Torch-Pruning's kept filters that onnxprune keeps too

Usage: python -m benchmarks.bench_prune_latency [--out benchmarks/results] [--runs 50] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

import onnxprune
from benchmarks.common import interleaved_medians, machine, session
from models.architectures import ZOO, ZooEntry
from models.export_zoo import build_model, export
from onnxprune.flops import count_costs
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec

RATIOS = (0.3, 0.5)
SPATIAL = 128  # fully convolutional models are timed at 128 x 128; fixed-size ones at their own size


def bench_shape(entry: ZooEntry) -> tuple[int, int, int, int]:
    return (1, 3, SPATIAL, SPATIAL) if entry.dynamic_spatial else (1,) + entry.input_shape[1:]


def output_module(model: torch.nn.Module) -> torch.nn.Module:
    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]


def torch_pruning(entry: ZooEntry, ratio: float, shape) -> tuple[torch.nn.Module, float, dict[str, set[int]]]:
    """Prune with Torch-Pruning; returns the model, the seconds it took, and kept output filters per conv."""
    import torch_pruning as tp

    model = build_model(entry)
    names = {id(m): n for n, m in model.named_modules()}
    sizes = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1}
    example = torch.randn(*shape)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[output_module(model)])
    removed: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            name = names.get(id(dep.target.module))
            if name in sizes and dep.handler.__name__ == "prune_out_channels":
                removed[name] = set(int(i) for i in idxs)
        group.prune()
    seconds = time.perf_counter() - start
    kept = {n: set(range(sizes[n])) - r for n, r in removed.items() if r}
    return model.eval(), seconds, kept


def export_torch(model: torch.nn.Module, entry: ZooEntry) -> onnx.ModelProto:
    return normalize(export(entry, "legacy", model=model))


def our_kept(result) -> dict[str, set[int]]:
    """Kept output channels per single-source conv group, keyed by the PyTorch module path."""
    out = {}
    for g in result.plan.groups:
        group = result.analysis.group(g.id)
        if g.removed and len(group.sources) == 1:
            module = ".".join(p for p in g.id.strip("/").split("/")[-2:-1])
            out[module] = set(g.keep)
    return out


def bench_model(name: str, runs: int) -> list[dict[str, object]]:
    entry = ZOO[name]
    shape = bench_shape(entry)
    spec = InputSpec({"input": shape})
    folded = onnxprune.fold(normalize(export(entry, "legacy_bn"))).model
    variants: dict[str, onnx.ModelProto] = {"original": folded}
    info: dict[str, dict[str, object]] = {"original": {}}
    for ratio in RATIOS:
        for round_to in (1, 8):
            start = time.perf_counter()
            result = prune(folded, PlanOptions(ratio=ratio, round_to=round_to), spec=spec)
            seconds = time.perf_counter() - start
            key = f"onnxprune {ratio:.0%}" + (" r8" if round_to > 1 else "")
            variants[key] = result.model
            info[key] = {"prune_s": seconds, "result": result}
        try:
            pruned, seconds, kept = torch_pruning(entry, ratio, shape)
            key = f"torch-pruning {ratio:.0%}"
            variants[key] = export_torch(pruned, entry)
            info[key] = {"prune_s": seconds, "kept": kept}
        except Exception as e:  # Torch-Pruning cannot handle every model: record it, keep going
            info[f"torch-pruning {ratio:.0%}"] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
    macs = {k: count_costs(m, {"input": shape}).macs for k, m in variants.items()}
    feeds = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    rows = []
    for threads in (1, 2):
        medians = interleaved_medians({k: session(m, threads) for k, m in variants.items()}, feeds, runs)
        for key in info:
            row: dict[str, object] = {"model": name, "variant": key, "threads": threads,
                                      "input": "x".join(map(str, shape))}
            if "error" in info[key]:
                row["error"] = info[key]["error"]
                rows.append(row)
                continue
            speedup = medians["original"] / medians[key]
            row.update(median_ms=medians[key] * 1e3, macs=macs[key], speedup=speedup,
                       efficiency=speedup / (macs["original"] / macs[key]),
                       prune_s=info[key].get("prune_s"))
            ratio_key = key.split()[-1] if key.startswith("torch") else None
            if ratio_key:
                ours = info.get(f"onnxprune {ratio_key}")
                if ours:
                    theirs, mine = info[key]["kept"], our_kept(ours["result"])
                    common = [m for m in theirs if m in mine]
                    row["same_filters"] = statistics.mean(len(theirs[m] & mine[m]) / len(theirs[m])
                                                          for m in common) if common else None
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]], runs: int) -> str:
    lines = ["# Latency after filter pruning: onnxprune vs Torch-Pruning (ONNX Runtime CPU)", "",
             f"Command: `python -m benchmarks.bench_prune_latency --runs {runs}`  ", f"Machine: {machine()}", "",
             f"Batch 1, ORT optimizations on, spinning off, interleaved, median of {runs} rounds. Efficiency = "
             "speedup / (MACs before / MACs after). *r8* = `--round-to 8`. *same filters* = share of "
             "Torch-Pruning's kept filters that onnxprune (L1) also keeps, over convs both pruned alone.", "",
             "| model | input | variant | MACs | 1 thread ms | speedup | efficiency | 2 threads ms | speedup | "
             "efficiency | prune s | same filters |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r["model"], r["variant"], r["threads"]): r for r in rows}
    for (model, variant, threads), r in keyed.items():
        if threads != 1:
            continue
        r2 = keyed[(model, variant, 2)]
        if "error" in r:
            lines.append(f"| {model} | {r['input']} | {variant} | failed: {r['error']} |||||||||")
            continue
        same = r.get("same_filters")
        prune_s = "" if r.get("prune_s") is None else f"{r['prune_s']:.3f}"
        same_txt = "" if same is None else f"{same:.0%}"
        lines.append(
            f"| {model} | {r['input']} | {variant} | {r['macs'] / 1e6:.1f}M | {r['median_ms']:.2f} | "
            f"{r['speedup']:.2f} | {r['efficiency']:.2f} | {r2['median_ms']:.2f} | {r2['speedup']:.2f} | "
            f"{r2['efficiency']:.2f} | {prune_s} | {same_txt} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, object]]) -> str:
    out = []
    for prefix in ("onnxprune 30%", "onnxprune 50%", "onnxprune 30% r8", "onnxprune 50% r8", "torch-pruning 30%",
                   "torch-pruning 50%"):
        eff = [r["efficiency"] for r in rows if r["variant"] == prefix and "efficiency" in r]
        if eff:
            out.append(f"- {prefix}: efficiency median {statistics.median(eff):.2f}, range {min(eff):.2f}–"
                       f"{max(eff):.2f} over {len(eff)} model/thread cells")
    ours = [r["prune_s"] for r in rows if r["variant"].startswith("onnxprune") and r["threads"] == 1]
    theirs = [r["prune_s"] for r in rows if r["variant"].startswith("torch") and r.get("prune_s") and r["threads"] == 1]
    if ours and theirs:
        out.append(f"- pruning time: onnxprune median {statistics.median(ours):.3f} s, Torch-Pruning median "
                   f"{statistics.median(theirs):.3f} s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", default=",".join(ZOO))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args.runs)
        print(f"{name}: " + ", ".join(f"{r['variant']} x{r.get('efficiency', float('nan')):.2f}"
                                      for r in rows if r["model"] == name and r["threads"] == 1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune_latency.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    (args.out / "prune_latency.md").write_text(markdown(rows, args.runs))
    print(f"wrote {args.out / 'prune_latency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
