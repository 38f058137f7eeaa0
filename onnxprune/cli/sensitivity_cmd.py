"""``onnxprune sensitivity MODEL --data D -o DIR``: per-group sensitivity curves and the plans derived from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import (
    add_data_args,
    add_input_shape_args,
    console,
    figure,
    step_from_args,
)
from onnxprune.importance import Criterion
from onnxprune.metrics import METRIC_HELP
from onnxprune.sensitivity_analysis import DEFAULT_RATIOS
from onnxprune.steps.base import StepContext
from onnxprune.steps.sensitivity import SensitivityStep


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
    result = step_from_args(SensitivityStep, args).run(StepContext(Path(args.model), args.output))
    r = result.report
    console.print(f"{r['groups']} groups x {len(r['ratios'])} ratios on {r['samples']} samples ({r['metric']}, "
                  f"original {figure(r['metric'], r['baseline'][r['metric']])}); wrote {args.output}/")
    return 0
