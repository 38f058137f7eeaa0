"""Pruning without training on the digits models: plans x schedules x recovery, and Torch-Pruning's L1.

For each model (BatchNorm folded) and MACs reduction (30%, 50%), top-1 on the 450 test digits (ONNX Runtime) of:

- plan ``l1``: ``prune --target-flops (1 - r)`` with L1 (one ratio for every group);
- plan ``activation``: the same with ``--criterion activation`` (mean activation on the calibration data);
- plan ``sensitivity``: ``onnxprune sensitivity --metric kl --target-flops (1 - r)`` (the greedy plan with the
  least measured loss per MAC saved), measured on the calibration data;
- each with ``--recover none | bias | lsq`` (one-shot), and the l1/activation plans with ``--schedule
  iterative --steps 4`` and ``--schedule layerwise`` (none and lsq);
- Torch-Pruning 1.6.1 ``MetaPruner`` + ``GroupMagnitudeImportance(p=1)`` (its L1), ratio bisected to the same
  MACs reduction, output layer ignored, no fine-tuning (ResNet-56 option A is not supported by it).

Calibration: 128 training digits (``models/digits/digits_calib.npz``), never the test split.

Usage: python -m benchmarks.bench_recover [--out benchmarks/results] [--models studentnet,vgg16_bn,resnet56]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

import onnxprune
from benchmarks.common import DIGITS, accuracy, digits_test, machine
from onnxprune.data import load_data
from onnxprune.importance import Criterion
from onnxprune.metrics import Metric
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.schedule import Schedule, ScheduleOptions
from onnxprune.sensitivity_analysis import run_sensitivity, target_plan
from onnxprune.verify import InputSpec

MODELS = ("studentnet", "vgg16_bn", "resnet56")
REDUCTIONS = (0.3, 0.5)
SPEC = InputSpec({"input": (1, 3, 32, 32)})


def torch_pruning_at(name: str, reduction: float, example) -> tuple[object, object, float]:
    """(original, pruned, MACs kept): Torch-Pruning's group L1 on the digits model's PyTorch module at the same
    MACs reduction (pruning ratio bisected; the classifier kept). Raises what Torch-Pruning raises."""
    import torch
    import torch_pruning as tp

    from models.onnx_weights import load_weights
    from models.train_digits import RECIPES

    base = load_weights(RECIPES[name].build(), DIGITS / f"{name}.onnx")
    base.eval()
    macs0, _ = tp.utils.count_ops_and_params(base, example)

    def pruned(ratio: float):
        model = copy.deepcopy(base)
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                      pruning_ratio=ratio, ignored_layers=[last])
        pruner.step()
        return model.eval(), tp.utils.count_ops_and_params(model, example)[0] / macs0

    lo, hi = 0.0, 0.95
    best = None
    for _ in range(10):
        mid = (lo + hi) / 2
        model, kept = pruned(mid)
        if kept <= 1 - reduction:
            hi, best = mid, (model, kept)
        else:
            lo = mid
    if best is None:
        raise RuntimeError("did not reach the MACs target")
    return base, best[0], best[1]


def torch_pruning_l1(name: str, reduction: float, x: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Torch-Pruning's L1 at the same MACs reduction, no fine-tuning."""
    import torch

    from models.train_digits import evaluate_torch

    start = time.perf_counter()
    try:
        _, model, kept = torch_pruning_at(name, reduction, torch.from_numpy(x[:1]))
    except Exception as e:  # noqa: BLE001 - Torch-Pruning's failure is a result here
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    return {"top1": evaluate_torch(model, x, labels), "macs_kept": kept, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--from-log", type=Path, help="only render the tables from the JSON lines a run printed")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    if args.from_log:
        rows = [json.loads(line) for line in args.from_log.read_text().splitlines() if line.startswith("{")]
        done = list(dict.fromkeys(str(r["model"]) for r in rows))
        expected = len(REDUCTIONS) * (3 * 3 + 2 * 2 * 2 + 1)
        partial = [m for m in done if sum(r["model"] == m for r in rows) < expected]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "recover.json").write_text(json.dumps(rows, indent=2) + "\n")
        note = (f"\n\n**Partial run**: {', '.join(partial)} incomplete (rows missing are shown as –)." if partial
                else "")
        (args.out / "recover.md").write_text(markdown(rows, done) + note + "\n")
        return 0
    x, labels = digits_test()
    rows: list[dict[str, object]] = []

    def record(**row: object) -> None:
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    for name in models:
        model = onnxprune.fold(onnxprune.load(DIGITS / f"{name}.onnx")).model
        calib = load_data(DIGITS / "digits_calib.npz", model)
        base = accuracy(model, x, labels)
        start = time.perf_counter()
        sens = run_sensitivity(model, calib, metric=Metric.KL, jobs=2, spec=SPEC)
        sens_seconds = time.perf_counter() - start
        for reduction in REDUCTIONS:
            plans = {"l1": (PlanOptions(target_flops=1 - reduction), None),
                     "activation": (PlanOptions(target_flops=1 - reduction, criterion=Criterion.ACTIVATION), None),
                     "sensitivity": (PlanOptions(), target_plan(model, sens, 1 - reduction, SPEC))}
            runs = [(p, Schedule.ONESHOT, r) for p in plans for r in Recover]
            runs += [(p, s, r) for p in ("l1", "activation") for s in (Schedule.ITERATIVE, Schedule.LAYERWISE)
                     for r in (Recover.NONE, Recover.LSQ)]
            for plan_name, schedule, method in runs:
                options, plan = plans[plan_name]
                start = time.perf_counter()
                result = prune(model, options, plan=plan, spec=SPEC, recover_with=method, data=calib,
                               schedule=ScheduleOptions(schedule, steps=4))
                record(model=name, reduction=reduction, plan=plan_name, schedule=schedule.value,
                       recover=method.value, macs_kept=result.report.flops_after / result.report.flops_before,
                       top1=accuracy(result.model, x, labels), top1_original=base,
                       seconds=time.perf_counter() - start + (sens_seconds if plan_name == "sensitivity" else 0.0))
            record(model=name, reduction=reduction, plan="torch-pruning l1", schedule="oneshot", recover="none",
                   top1_original=base, **torch_pruning_l1(name, reduction, x, labels))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recover.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "recover.md").write_text(markdown(rows, models) + "\n")
    print(f"wrote {args.out / 'recover.md'}")
    return 0


def _cell(rows: list[dict[str, object]], **key: object) -> str:
    row = next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)
    if row is None:
        return "–"
    if "error" in row:
        return "fails"
    return f"{row['top1']:.2%}"


def markdown(rows: list[dict[str, object]], models: list[str]) -> str:
    lines = ["# Pruning without training: plans, schedules and recovery (digits, 450 test images)", "",
             "Command: `python -m benchmarks.bench_recover`  ", f"Machine: {machine()}  ",
             "Calibration: 128 training digits. MACs reduction by `--target-flops`; every cell is top-1 accuracy.", "",
             "## One-shot: plan x recovery, and Torch-Pruning's L1 (no fine-tuning)", "",
             "| model | original | MACs −% | plan | none | bias | lsq | lsq s | Torch-Pruning L1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in models:
        for red in REDUCTIONS:
            for plan in ("l1", "activation", "sensitivity"):
                key = dict(model=name, reduction=red, plan=plan, schedule="oneshot")
                lsq = next((r for r in rows if all(r.get(k) == v for k, v in key.items()) and r["recover"] == "lsq"),
                           None)
                if lsq is None:
                    continue
                tp = _cell(rows, model=name, reduction=red, plan="torch-pruning l1") if plan == "l1" else ""
                lines.append(f"| {name} | {lsq['top1_original']:.2%} | {red:.0%} | {plan} | "
                             f"{_cell(rows, **key, recover='none')} | {_cell(rows, **key, recover='bias')} | "
                             f"{lsq['top1']:.2%} | {lsq['seconds']:.1f} | {tp} |")
    lines += ["", "## Schedules: one-shot vs iterative (4 rounds) vs layer-wise (same channel counts)", "",
              "| model | MACs −% | plan | recover | oneshot | iterative | layerwise | layerwise s |",
              "|---|---|---|---|---|---|---|---|"]
    wins = {"iterative": [0, 0, 0], "layerwise": [0, 0, 0]}  # better, equal, worse than one-shot
    for name in models:
        for red in REDUCTIONS:
            for plan in ("l1", "activation"):
                for rec in ("none", "lsq"):
                    key = dict(model=name, reduction=red, plan=plan, recover=rec)
                    got = {s: next((r for r in rows if all(r.get(k) == v for k, v in key.items())
                                    and r["schedule"] == s), None) for s in ("oneshot", "iterative", "layerwise")}
                    if any(v is None for v in got.values()):
                        continue
                    for s in ("iterative", "layerwise"):
                        d = got[s]["top1"] - got["oneshot"]["top1"]  # type: ignore[index,operator]
                        wins[s][0 if d > 1e-9 else 2 if d < -1e-9 else 1] += 1
                    lines.append(f"| {name} | {red:.0%} | {plan} | {rec} | {got['oneshot']['top1']:.2%} | "
                                 f"{got['iterative']['top1']:.2%} | {got['layerwise']['top1']:.2%} | "
                                 f"{got['layerwise']['seconds']:.1f} |")
    lines += [""] + [f"{s}: better than one-shot in {b}, equal in {e}, worse in {w} of {b + e + w} cells"
                     for s, (b, e, w) in wins.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
