"""``onnxprune finetune STUDENT -o OUT --teacher TEACHER --data TRAIN``: train the student's weights in its own
ONNX graph by distillation from the teacher (and labels when the data has them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from onnxprune.cli.common import (
    add_data_args,
    console,
    figure,
    print_json,
    step_from_args,
)
from onnxprune.metrics import METRIC_HELP
from onnxprune.steps.base import StepContext
from onnxprune.steps.finetune import FinetuneStep

if TYPE_CHECKING:
    from onnxprune.training.train import FinetuneResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="train a (pruned) model's weights in its ONNX graph, distilling a teacher",
                       description="Knowledge distillation from --teacher (plus cross-entropy / CTC when the data "
                                   "has labels) on a differentiable copy of the ONNX graph, checked against ONNX "
                                   "Runtime before training. Only weight values change: node structure, names, "
                                   "opset, inputs and outputs stay as they are.")
    p.add_argument("model", help="the student .onnx (e.g. a pruned model)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--teacher", type=Path, help="the teacher .onnx (usually the original model)")
    add_data_args(p, "training data", required=True)
    p.add_argument("--eval-data", type=Path,
                   help="held-out data: metric before/after, best-weights selection and early stopping")
    p.add_argument("--metric", help=METRIC_HELP)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float, default=5.0, help="passes over the training data (default 5)")
    t.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    t.add_argument("--lr", type=float, help="learning rate (default 1e-2 for adam, relative: each weight tensor moves by about lr x its own RMS "
                        "per step; 1e-3 for sgd, absolute; warmed up over the first steps)")
    t.add_argument("--batch-size", type=int, default=32, help="samples per step (default 32)")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    t.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule (default cosine)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (default 4)")
    t.add_argument("--alpha", type=float, default=0.5,
                   help="weight of distillation vs. the label loss when both apply (default 0.5)")
    t.add_argument("--match", action="append", default=[], metavar="TENSOR",
                   help="also match this intermediate tensor of the teacher (same name and shape; repeatable); "
                        "'auto': up to 4 tensors both compute with equal shapes (the features pruning kept whole)")
    t.add_argument("--patience", type=int, help="stop after N evaluations on --eval-data without improvement")
    t.add_argument("--eval-every", type=int, help="steps between evaluations (default: one epoch)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    f = p.add_argument_group("frozen layers")
    f.add_argument("--freeze", action="append", default=[], metavar="GLOB",
                   help="keep weights whose tensor name, or the name of a node reading them, matches GLOB")
    f.add_argument("--freeze-sensitive", type=Path, metavar="DIR",
                   help="an onnxprune sensitivity folder: freeze the layers whose metric drops by more than "
                        "--tolerance at its smallest ratio (the notes' strategy 5)")
    f.add_argument("--tolerance", type=float, default=0.01, help="with --freeze-sensitive (default 0.01)")
    o = p.add_argument_group("output")
    o.add_argument("--report", type=Path, help="write a JSON report (loss curve, metrics before/after, timing)")
    o.add_argument("--save-best", action="store_true",
                   help="write -o each time the eval metric improves (an interrupted run keeps the best so far)")
    o.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = step_from_args(FinetuneStep, args).run(StepContext(Path(args.model), Path(args.output), args.report))
    if args.json:
        print_json(result.report)
        return 0
    _print(result.details, args, result.report["train_samples"], result.report["eval_samples"])
    return 0


def _print(result: FinetuneResult, args: argparse.Namespace, train: int, held_out: int | None) -> None:
    console.print(f"fine-tuned {len(result.trained)} weight tensors ({len(result.frozen)} frozen) for "
                  f"{result.steps} steps on {train} samples in {result.seconds:.1f} s "
                  f"({result.samples_per_second:.0f} samples/s); engine vs ONNX Runtime: relative diff "
                  f"{result.engine_relative_diff:.1e}", markup=False)
    if "auto" in args.match:
        console.print("--match auto: " + (", ".join(result.matched) if result.matched else
                                          "no intermediate tensor has the same name and shape in both models"),
                      markup=False)
    if result.before is not None and result.after is not None and result.metric is not None:
        console.print(f"on {held_out} samples of --eval-data: {result.metric} "
                      f"{figure(result.metric, result.before[result.metric])} -> "
                      f"{figure(result.metric, result.after[result.metric])}"
                      + (f" (best at step {result.best_step}" + (", stopped early" if result.stopped_early else "")
                         + ")" if result.best_step else ""), markup=False)
    else:
        console.print("no --eval-data: the last weights are written (no held-out figure)", markup=False)
    console.print(f"wrote {args.output}", markup=False)
