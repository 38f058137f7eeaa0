"""``onnxprune finetune STUDENT -o OUT --teacher TEACHER --data TRAIN``: train the student's weights in its own
ONNX graph by distillation from the teacher (and labels when the data has them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from onnxprune.api import save
from onnxprune.cli.common import (
    add_data_args,
    console,
    data_from_args,
    figure,
    guard_paths,
    load_model,
    print_json,
)
from onnxprune.errors import UsageError
from onnxprune.io import ensure_output_path, write_text_atomic
from onnxprune.metrics import METRIC_HELP, parse_metric

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
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("onnxprune finetune needs PyTorch: pip install 'onnxprune[finetune]'") from None
    from onnxprune.signals import signals_deferred
    with signals_deferred():   # torch's import must not be cut by a signal (see onnxprune.signals)
        from onnxprune.training.train import (
            FinetuneOptions,
            Optimizer,
            Schedule,
            finetune,
            sensitive_layers,
        )
    guard_paths(args, inputs=("model", "teacher", "data", "eval_data", "freeze_sensitive"),
                files=("output", "report"))
    ensure_output_path(args.output, args.model)
    if args.save_best and args.eval_data is None:
        raise UsageError("--save-best needs --eval-data (the best is chosen on it)")
    if args.batch_size < 1 or (args.steps is not None and args.steps < 1) or args.epochs <= 0:
        raise UsageError("--batch-size, --steps and --epochs must be positive")
    student = load_model(args.model, normalized=False)     # trained as it is: only weight values change
    teacher = load_model(args.teacher) if args.teacher else None
    data = data_from_args(args, student)
    eval_data = data_from_args(args, student, "eval_data")
    freeze = tuple(args.freeze)
    if args.freeze_sensitive:
        freeze += sensitive_layers(args.freeze_sensitive, args.tolerance)
    options = FinetuneOptions(epochs=args.epochs, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                              optimizer=Optimizer(args.optimizer), schedule=Schedule(args.schedule),
                              weight_decay=args.weight_decay, temperature=args.temperature, alpha=args.alpha,
                              match=tuple(args.match), freeze=freeze, eval_every=args.eval_every,
                              patience=args.patience, seed=args.seed, threads=args.threads,
                              metric=parse_metric(args.metric))

    def save_best(model: onnx.ModelProto, step: int) -> None:
        save(model, args.output, source=args.model)

    result = finetune(student, data, teacher=teacher, eval_data=eval_data, options=options,
                      on_improved=save_best if args.save_best else None)
    save(result.model, args.output, source=args.model)
    report = {"input": args.model, "output": args.output, "teacher": str(args.teacher) if args.teacher else None,
              "train_samples": len(data), "eval_samples": len(eval_data) if eval_data is not None else None,
              **result.to_json()}
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=1) + "\n", args.model)
    if args.json:
        print_json(report)
        return 0
    _print(result, args, len(data), len(eval_data) if eval_data is not None else None)
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
