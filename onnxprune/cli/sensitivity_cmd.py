"""``onnxprune sensitivity MODEL --data D -o DIR``: per-group sensitivity curves and the plans derived from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import (
    add_data_args,
    add_input_shape_args,
    console,
    data_from_args,
    figure,
    guard_paths,
    input_spec,
    load_model,
)
from onnxprune.emit.outdir import check_output_dir, staged_output_dir
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion
from onnxprune.metrics import METRIC_HELP, parse_metric
from onnxprune.progress import stage, timing
from onnxprune.sensitivity import (
    DEFAULT_RATIOS,
    run_sensitivity,
    target_plan,
    tolerance_plan,
    write_results,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="prune each channel group alone at each ratio and measure the loss",
                       description="Writes sensitivity.{csv,json,md,png} and plan_tolerance.json (plus "
                                   "plan_target.json with --target-flops) into DIR; `prune --sensitivity DIR` "
                                   "applies the target plan if there is one, else the tolerance plan.")
    p.add_argument("model")
    add_data_args(p, "samples the metric is measured on", required=True, limit=512)
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS))
    p.add_argument("--metric", metavar="METRIC", help=METRIC_HELP)
    p.add_argument("--criterion", choices=[c.value for c in Criterion], default="l1")
    p.add_argument("--tolerance", type=float, default=0.01, help="metric loss allowed per group (default 0.01)")
    p.add_argument("--target-flops", type=float, help="also derive a plan with MACs <= F x original")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
        if any(not 0 < r < 1 for r in ratios):
            raise ValueError
    except ValueError:
        raise UsageError(f"--ratios {args.ratios!r}: expected comma-separated ratios in (0, 1)") from None
    guard_paths(args, inputs=("model", "data"), folders=("output",))
    check_output_dir(args.output, args.force)
    spec = input_spec(args)
    with staged_output_dir(args.output, args.force, "sensitivity") as tmp, timing() as stages:
        with stage("loading the model and data"):
            model = load_model(args.model)
            data = data_from_args(args, model)
        metric = parse_metric(args.metric)
        result = run_sensitivity(model, data, ratios=ratios, metric=metric, criterion=Criterion(args.criterion),
                                 jobs=args.jobs, spec=spec)
        with stage("deriving plans"):
            plans = {"plan_tolerance.json": tolerance_plan(model, result, args.tolerance, data)}
            if args.target_flops:
                plans["plan_target.json"] = target_plan(model, result, args.target_flops, spec, data)
        for name, plan in plans.items():
            plan.save(tmp / name)
        write_results(tmp, result, stages)
    groups = len({p.group for p in result.points})
    console.print(f"{groups} groups x {len(ratios)} ratios on {len(data)} samples ({result.metric.value}, original "
                  f"{figure(result.metric.value, result.baseline[result.metric.value])}); wrote {args.output}/")
    return 0
