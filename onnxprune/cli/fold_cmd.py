"""``onnxprune fold IN -o OUT``: fold BatchNorm (and per-channel constant affine ops) into preceding layers."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from onnxprune.api import fold, save
from onnxprune.cli.common import (
    add_input_shape_args,
    console,
    guard_paths,
    input_spec,
    load_model,
    print_json,
)
from onnxprune.io import ensure_output_path
from onnxprune.pass_infra import CheckLevel, Checks


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
    p.add_argument("--no-simplify", dest="simplify", action="store_false",
                   help="fold only: skip the exact simplifications (shared constants, common subexpressions, no-op "
                        "Identity/Dropout/Cast/Mul-by-1, Reshape targets computed from the input's own shape, "
                        "Slice chains) that run by default")
    p.add_argument("--dump-dir", type=Path, help="save the model after each pass into this folder")
    p.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                   help="write weights to OUT.data (auto: only when the model is over ~1.8 GB)")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    guard_paths(args, inputs=("model",), files=("output",), folders=("dump_dir",))
    ensure_output_path(args.output, args.model)
    spec = input_spec(args)
    model = load_model(args.model)
    checks = Checks(CheckLevel.NUMERIC if args.verify else CheckLevel.NONE, rel_tol=args.tolerance,
                    inputs=spec, dump_dir=args.dump_dir)
    result = fold(model, checks, simplify=args.simplify)
    save(result.model, args.output, source=args.model,
         external_data={"auto": None, "yes": True, "no": False}[args.external_data])

    bn_before = sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")
    bn_after = sum(1 for n in result.model.graph.node if n.op_type == "BatchNormalization")
    by_op = Counter(f.op for f in result.folded)
    skipped_bn = [f for f in result.skipped if f.op == "BatchNormalization"]
    comparison = result.pipeline.comparison
    report = {
        "input": args.model, "output": args.output,
        "batchnorm_before": bn_before, "batchnorm_after": bn_after,
        "folded": {op: n for op, n in by_op.items()},
        "not_folded": [{"node": f.node, "op": f.op, "reason": f.reason} for f in result.skipped],
        "simplified": dict(Counter(f.op for f in result.simplified)),
        "nodes_before": len(model.graph.node), "nodes_after": len(result.model.graph.node),
        "verified": args.verify,
        "max_abs_diff": comparison.max_abs_diff if comparison else None,
        "max_abs_output": comparison.max_abs_reference if comparison else None,
        "seconds": round(sum(r.seconds for r in result.pipeline.records), 4),
    }
    if args.json:
        print_json(report)
        return 0
    console.print(f"folded {by_op.get('BatchNormalization', 0)} of {bn_before} BatchNormalization node(s)"
                  + "".join(f", {n} {op}" for op, n in by_op.items() if op != "BatchNormalization")
                  + f"; {bn_after} remain; nodes {report['nodes_before']} -> {report['nodes_after']}")
    if result.simplified:
        console.print("simplified: " + ", ".join(f"{n} {op}" for op, n in report["simplified"].items())
                      + " (merged, removed or given a constant target)")
    for f in skipped_bn:
        console.print(f"  kept {f.node}: {f.reason}", markup=False)
    for f in result.skipped:
        if f.op != "BatchNormalization":
            console.print(f"  kept {f.op} {f.node}: {f.reason}", markup=False)
    if comparison:
        console.print(f"verified: max abs diff {comparison.max_abs_diff:.3g} (max |output| "
                      f"{comparison.max_abs_reference:.3g}; relative {comparison.relative:.2g})")
    console.print(f"wrote {args.output}")
    return 0
