"""``onnxprune fold IN -o OUT``: fold BatchNorm (and per-channel constant affine ops) into preceding layers."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import (
    add_input_shape_args,
    console,
    print_json,
    step_from_args,
)
from onnxprune.steps.base import StepContext
from onnxprune.steps.fold import FoldStep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fold", help="fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul",
                       description="Fold BatchNormalization and per-channel constant Mul/Add/Sub/Div into the "
                                   "preceding layer. The input file is never modified.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    p.add_argument("--verify", action="store_true",
                   help="after each pass: full ONNX check, ORT session, and outputs compared with the input model "
                        "(ORT optimizations off) on seeded random inputs")
    p.add_argument("--tolerance", type=float,
                   help="--verify fails when max abs diff > TOLERANCE x max |output| "
                        "(default 1e-5 for float32 outputs, 4e-3 for float16)")
    p.add_argument("--no-simplify", action="store_true",
                   help="fold only: skip the exact simplifications (shared constants, common subexpressions, no-op "
                        "Identity/Dropout/Cast/Mul-by-1, Reshape targets computed from the input's own shape, "
                        "Slice chains) that run by default")
    p.add_argument("--dump-dir", type=Path, help="save the model after each pass into this folder")
    p.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                   help="write weights to OUT.data (auto: only when the model is over ~1.8 GB)")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = step_from_args(FoldStep, args).run(StepContext(Path(args.model), Path(args.output)))
    report, fold_result = result.report, result.details
    if args.json:
        print_json(report)
        return 0
    by_op = report["folded"]
    console.print(f"folded {by_op.get('BatchNormalization', 0)} of {report['batchnorm_before']} BatchNormalization "
                  f"node(s)" + "".join(f", {n} {op}" for op, n in by_op.items() if op != "BatchNormalization")
                  + f"; {report['batchnorm_after']} remain; nodes {report['nodes_before']} -> {report['nodes_after']}")
    if fold_result.simplified:
        console.print("simplified: " + ", ".join(f"{n} {op}" for op, n in report["simplified"].items())
                      + " (merged, removed or given a constant target)")
    for f in fold_result.skipped:
        if f.op == "BatchNormalization":
            console.print(f"  kept {f.node}: {f.reason}", markup=False)
    for f in fold_result.skipped:
        if f.op != "BatchNormalization":
            console.print(f"  kept {f.op} {f.node}: {f.reason}", markup=False)
    comparison = fold_result.pipeline.comparison
    if comparison:
        console.print(f"verified: max abs diff {comparison.max_abs_diff:.3g} (max |output| "
                      f"{comparison.max_abs_reference:.3g}; relative {comparison.relative:.2g})")
    console.print(f"wrote {args.output}")
    return 0
