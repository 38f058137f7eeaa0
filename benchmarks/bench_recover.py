"""Training-free recovery on the digits models: top-1 at 30% and 50% MACs reduction for none / bias / lsq.

`prune --target-flops (1 - reduction)` with L1 (one ratio for every group), recovery calibrated on 128
training digits (`models/digits/digits_calib.npz`), top-1 on the 450 test digits (ONNX Runtime).

Usage: python -m benchmarks.bench_recover [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnxprune
from benchmarks.common import DIGITS, accuracy, digits_test, machine
from onnxprune.data import load_npz
from onnxprune.plan import PlanOptions
from onnxprune.prune import prune
from onnxprune.recover import Recover
from onnxprune.verify import InputSpec

MODELS = ("studentnet", "vgg16_bn", "resnet56")
REDUCTIONS = (0.3, 0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    x, labels = digits_test()
    spec = InputSpec({"input": (1, 3, 32, 32)})
    rows = []
    for name in MODELS:
        model = onnxprune.fold(onnxprune.load(DIGITS / f"{name}.onnx")).model
        calib = load_npz(DIGITS / "digits_calib.npz", model)
        base = accuracy(model, x, labels)
        for reduction in REDUCTIONS:
            for method in Recover:
                start = time.perf_counter()
                result = prune(model, PlanOptions(target_flops=1 - reduction), spec=spec, recover_with=method,
                               data=None if method is Recover.NONE else calib)
                rows.append({"model": name, "reduction": reduction, "recover": method.value,
                             "macs_kept": result.report.flops_after / result.report.flops_before,
                             "top1": accuracy(result.model, x, labels), "top1_original": base,
                             "seconds": time.perf_counter() - start})
                print(f"{name} -{reduction:.0%} {method.value}: {rows[-1]['top1']:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recover.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Training-free recovery after L1 filter pruning (digits, 450 test images)", "",
             "Command: `python -m benchmarks.bench_recover`  ", f"Machine: {machine()}", "",
             "| model | original | MACs reduction | MACs kept | none | bias | lsq | lsq time s |", "|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        for red in REDUCTIONS:
            cell = {r["recover"]: r for r in rows if r["model"] == name and r["reduction"] == red}
            lines.append(f"| {name} | {cell['none']['top1_original']:.2%} | {red:.0%} | {cell['none']['macs_kept']:.1%} | "
                         f"{cell['none']['top1']:.2%} | {cell['bias']['top1']:.2%} | {cell['lsq']['top1']:.2%} | "
                         f"{cell['lsq']['seconds']:.1f} |")
    (args.out / "recover.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'recover.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
