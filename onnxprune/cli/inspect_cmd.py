"""``onnxprune inspect MODEL``: ops, interface, parameters, MACs, foldable BatchNorms."""

from __future__ import annotations

import argparse

from rich.table import Table

from onnxprune.api import inspect
from onnxprune.cli.common import (
    add_input_shape_args,
    console,
    human,
    input_spec,
    load_model,
    print_json,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarize a model: ops, inputs/outputs, params, MACs, BatchNorms",
                       description="Summarize a model. MACs are computed at batch 1 unless --batch/--input-shape "
                                   "say otherwise.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--explain", action="store_true", help="say why each frozen channel group cannot be pruned")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = input_spec(args)
    summary = inspect(load_model(args.model, ort_artifact=True), spec)
    if args.json:
        print_json(summary.to_json())
        return 0
    console.print(f"[bold]{args.model}[/]  opset {summary.opset}, IR {summary.ir_version}"
                  + (f", from {summary.producer}" if summary.producer else ""))
    io = Table(box=None, show_header=True, header_style="bold")
    io.add_column("")
    io.add_column("name")
    io.add_column("dtype")
    io.add_column("shape")
    for kind, tensors in (("input", summary.inputs), ("output", summary.outputs)):
        for t in tensors:
            io.add_row(kind, t.name, t.dtype, "x".join(str(d) for d in t.shape))
    console.print(io)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in summary.flops_input_shapes.items())
    macs = f"MACs {human(summary.flops)} ({summary.flops:,}) at {shapes}" if not summary.flops_unresolved else (
        f"MACs unknown for {len(summary.flops_unresolved)} of {len(summary.layers)} layers "
        f"(dynamic dims: pass --input-shape)")
    console.print(f"params {human(summary.params)} ({summary.params:,})   {macs}")
    console.print("ops: " + ", ".join(f"{op} {n}" for op, n in summary.ops.items()))
    prunable = [g for g in summary.groups if g["prunable"]]
    share = summary.prunable_flops_fraction
    console.print(f"channel groups: {len(summary.groups)}, prunable {len(prunable)} "
                  f"({sum(g['channels'] for g in prunable)} channels)"
                  + (f", {share:.1%} of MACs in prunable layers" if share is not None else ""))
    if args.explain:
        for g in summary.groups:
            if not g["prunable"]:
                console.print(f"  frozen {g['id']} ({g['channels']} ch): {g['reason']}", markup=False)
    bns = summary.batchnorm
    console.print(f"BatchNormalization: {len(bns)}, foldable {summary.batchnorm_foldable}")
    for b in bns:
        if not b.foldable:
            console.print(f"  not foldable: {b.node}: {b.reason}", markup=False)
    return 0
