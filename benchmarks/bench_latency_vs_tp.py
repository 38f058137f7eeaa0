"""`prune --target-latency R` side by side with Torch-Pruning (`round_to=8`) at the same measured latency.

For each zoo model Torch-Pruning can prune: the folded legacy export is profiled and pruned by onnxprune for
R = 0.7 and 0.5 of its measured latency; Torch-Pruning (MetaPruner, group L1, `round_to=8`, the output layer
ignored) is run at the ratio whose exported model's measured latency is closest to onnxprune's (bisected, each
candidate timed interleaved against the original). Then the original and both pruned models run interleaved
(ORT CPU, optimizations on, spinning off, batch 1, one thread, >= --runs rounds): achieved latency ratio (the
median over rounds of variant / original in the same round), MACs,
params, efficiency = speedup / MACs reduction. Random weights: this compares structure (what each keeps for the
same time), not accuracy.

Usage: python -m benchmarks.bench_latency_vs_tp [--out benchmarks/results] [--runs 30] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from benchmarks.bench_latency_plan import (
    closest_by_measurement,
    measured_ratio,
    zoo_model,
)
from benchmarks.bench_prune_latency import output_module
from benchmarks.common import machine
from models.architectures import ZOO
from models.export_zoo import build_model, export
from onnxprune.flops import count_costs, count_params
from onnxprune.latency.measure import paired_timing
from onnxprune.latency.profile import profile_model
from onnxprune.latency.table import MeasurementCache
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.targets import TARGETS
from onnxprune.verify import InputSpec

#: The zoo models Torch-Pruning 1.6 prunes (it fails on ResNet-56's option-A shortcuts, the C2f block and the
#: ConvTranspose decoder: see bench_prune_latency).
SHARED = ("studentnet", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_se", "densenet",
          "resnext", "efficientnet")
REQUESTS = (0.7, 0.5)


def torch_pruning_r8(name: str, ratio: float, shape: tuple[int, ...]) -> onnx.ModelProto:
    import torch_pruning as tp

    entry = ZOO[name]
    model = build_model(entry)
    pruner = tp.pruner.MetaPruner(model, torch.randn(*shape), importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, round_to=8, ignored_layers=[output_module(model)])
    pruner.step()
    return normalize(export(entry, "legacy", model=model.eval()))


def tp_at_latency(name: str, original: onnx.ModelProto, goal: float, shape, spec: InputSpec
                  ) -> tuple[float, onnx.ModelProto]:
    """Torch-Pruning's ratio whose exported model is measured closest to ``goal``."""
    return closest_by_measurement(lambda r: torch_pruning_r8(name, r, shape), original, goal, 1, spec.shapes,
                                  0.0, 0.9, 6, slower_when_higher=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", default=",".join(SHARED))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as cache:
        for name in args.models.split(","):
            original, shape = zoo_model(name)
            spec = InputSpec({"input": shape})
            table = profile_model(original, TARGETS["cpu"], 1, spec, MeasurementCache(Path(cache)))
            for request in REQUESTS:
                ours = prune(original, PlanOptions(target_latency=request), spec=spec, latency=table).model
                goal = measured_ratio(original, ours, 1, spec.shapes)
                try:
                    tp_ratio, theirs = tp_at_latency(name, original, goal, shape, spec)
                except Exception as e:   # Torch-Pruning cannot handle every model: recorded, the others still run
                    print(f"{name} {request}: Torch-Pruning failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                    continue
                variants = {"original": original, "onnxprune": ours, "torch-pruning": theirs}
                timing = paired_timing(variants, "original", TARGETS["cpu"], 1, spec.shapes, min_rounds=args.runs)
                rounds = timing.rounds
                macs = {k: count_costs(m, spec.shapes).macs for k, m in variants.items()}
                for key, m in variants.items():
                    achieved = timing.ratios[key]
                    rows.append({"model": name, "request": request, "variant": key, "achieved": achieved,
                                 "macs": macs[key], "params": count_params(m), "rounds": rounds,
                                 "efficiency": (1 / achieved) / (macs["original"] / macs[key]),
                                 "tp_ratio": tp_ratio if key == "torch-pruning" else None})
                print(f"{name} {request}: " + ", ".join(f"{r['variant']} {r['achieved']:.3f} {r['macs'] / 1e6:.1f}M"
                                                        for r in rows[-3:]), flush=True)
    lines = ["# `--target-latency` vs Torch-Pruning (`round_to=8`) at the same measured latency (ORT CPU, 1 thread)",
             "", f"Command: `python -m benchmarks.bench_latency_vs_tp --runs {args.runs}`  ", f"Machine: {machine()}",
             "", "Random weights: MACs and params kept for the same measured time, not accuracy.", "",
             "| model | request | variant | achieved | MACs | params | efficiency | TP ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tp_ratio = "" if r["tp_ratio"] is None else f"{r['tp_ratio']:.3f}"
        lines.append(f"| {r['model']} | {r['request']} | {r['variant']} | {r['achieved']:.3f} | {r['macs'] / 1e6:.1f}M | "
                     f"{r['params'] / 1e6:.2f}M | {r['efficiency']:.2f} | {tp_ratio} |")
    pairs = [(a, b) for a in rows for b in rows if a["variant"] == "onnxprune" and b["variant"] == "torch-pruning"
             and a["model"] == b["model"] and a["request"] == b["request"]]
    more = sum(a["macs"] > b["macs"] for a, b in pairs)
    lines += ["", f"- onnxprune keeps more MACs than Torch-Pruning in {more} of {len(pairs)} model/request pairs; "
              f"efficiency median onnxprune "
              f"{sorted(a['efficiency'] for a, _ in pairs)[len(pairs) // 2]:.2f}, Torch-Pruning "
              f"{sorted(b['efficiency'] for _, b in pairs)[len(pairs) // 2]:.2f}" if pairs else ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_vs_tp.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "latency_vs_tp.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'latency_vs_tp.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
