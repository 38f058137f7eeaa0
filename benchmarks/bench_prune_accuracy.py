"""Accuracy of the digits-trained zoo after filter pruning, without any retraining, per criterion.

For each digits model and each MACs reduction (10..50%): `prune --target-flops (1 - reduction)` with one ratio
for every group ("uniform") and with `--global` ranking of per-layer normalized scores, with each criterion, then
top-1 on the 450 test digits (ONNX Runtime).
`random` is averaged over 5 seeds (mean and standard deviation). A model whose prunable layers hold less than
the requested share of MACs is pruned as far as its groups allow; the achieved reduction is reported.

Usage: python -m benchmarks.bench_prune_accuracy [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import onnxprune
from benchmarks.common import DIGITS, accuracy, digits_test, machine
from onnxprune.importance import Criterion
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec

MODELS = ("studentnet", "vgg16_bn", "resnet56")
REDUCTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
RANDOM_SEEDS = 5
MODES = ("uniform", "global")


def run(out: Path) -> None:
    x, labels = digits_test()
    spec = InputSpec({"input": (1, 3, 32, 32)})
    rows = []
    for name in MODELS:
        model = onnxprune.load(DIGITS / f"{name}.onnx")
        base = accuracy(model, x, labels)
        for reduction, mode, criterion in ((r, m, c) for r in REDUCTIONS for m in MODES for c in Criterion):
            if True:
                seeds = range(RANDOM_SEEDS) if criterion is Criterion.RANDOM else (0,)
                accs, macs = [], []
                for seed in seeds:
                    options = PlanOptions(target_flops=1 - reduction, criterion=criterion, seed=seed,
                                          global_ranking=mode == "global")
                    result = prune(model, options, spec=spec)
                    accs.append(accuracy(result.model, x, labels))
                    macs.append(result.report.flops_after / result.report.flops_before)
                rows.append({"model": name, "reduction": reduction, "mode": mode, "criterion": criterion.value,
                             "macs_kept": statistics.mean(macs), "top1": statistics.mean(accs),
                             "top1_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "top1_original": base})
                print(f"{name} -{reduction:.0%} {mode} {criterion.value}: {rows[-1]['top1']:.4f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune_accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "prune_accuracy.md").write_text(markdown(rows))


def markdown(rows: list[dict[str, object]]) -> str:
    crits = [c.value for c in Criterion]
    lines = ["# Top-1 after filter pruning, no retraining (digits test split, 450 images)", "",
             "Command: `python -m benchmarks.bench_prune_accuracy`  ", f"Machine: {machine()}", "",
             "`--target-flops (1 - reduction)`: *uniform* = one ratio for every group (bisection), *global* = "
             "`--global` ranking of per-layer normalized scores. `random` = mean ± std over "
             f"{RANDOM_SEEDS} seeds. *MACs kept* is what was achieved with l1 (ResNet-56's option-A shortcuts "
             "freeze its stage channels, so only the first conv of each block can be pruned: about 49% of its "
             "MACs).", ""]
    for model in MODELS:
        sub = [r for r in rows if r["model"] == model]
        lines += [f"## {model} (original top-1 {sub[0]['top1_original']:.2%})", "",
                  "| MACs reduction | mode | MACs kept | " + " | ".join(crits) + " |",
                  "|---|---|---|" + "---|" * len(crits)]
        for red in REDUCTIONS:
            for mode in MODES:
                cells = {r["criterion"]: r for r in sub if r["reduction"] == red and r["mode"] == mode}
                fmt = [f"{cells[c]['top1']:.1%}" + (f" ± {cells[c]['top1_std']:.1%}" if cells[c]["top1_std"] else "")
                       for c in crits]
                lines.append(f"| {red:.0%} | {mode} | {cells['l1']['macs_kept']:.1%} | " + " | ".join(fmt) + " |")
        lines.append("")
    for mode in MODES:
        def top1(m, red, c):
            return next(r["top1"] for r in rows if (r["model"], r["reduction"], r["mode"], r["criterion"]) ==
                        (m, red, mode, c))
        cells = [(m, red) for m in MODELS for red in REDUCTIONS]
        wins = sum(top1(m, red, "l1") > top1(m, red, "random") for m, red in cells)
        ties = sum(top1(m, red, "l1") == top1(m, red, "random") for m, red in cells)
        best = {c: sum(top1(m, red, c) == max(top1(m, red, k) for k in crits) for m, red in cells) for c in crits}
        lines.append(f"- {mode}: l1 beats random (mean of {RANDOM_SEEDS} seeds) in {wins} of {len(cells)} "
                     f"cells ({ties} ties); best criterion per cell: "
                     + ", ".join(f"{c} {n}" for c, n in best.items()) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    run(ap.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
