"""``onnxprune prune MODEL -o OUT``: remove low-importance filters and propagate to every consumer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import onnx

from onnxprune.api import save
from onnxprune.cli.common import (
    add_data_args,
    add_input_shape_args,
    console,
    data_from_args,
    err_console,
    figure,
    glob_values,
    guard_paths,
    human,
    image_preprocess,
    input_spec,
    load_model,
    print_json,
)
from onnxprune.data import Dataset, load_data
from onnxprune.errors import UsageError
from onnxprune.importance import Criterion
from onnxprune.io import ensure_output_path, write_text_atomic
from onnxprune.metrics import METRIC_HELP, parse_metric
from onnxprune.pass_infra import CheckLevel, Checks
from onnxprune.plan import CHANNEL_MULTIPLE, PlanOptions, PruningPlan
from onnxprune.progress import timing
from onnxprune.prune import prune
from onnxprune.recover import Recover
from onnxprune.schedule import Schedule, ScheduleOptions
from onnxprune.sensitivity import plan_for_prune
from onnxprune.signals import import_deferred
from onnxprune.verify import InputSpec

if TYPE_CHECKING:
    from onnxprune.training import FinetuneResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="remove low-importance filters (Li et al.) and propagate the change",
                       description="Remove low-importance channels from every prunable channel group and rewrite "
                                   "every layer that depends on them. Groups that reach a graph input/output or "
                                   "an op that cannot be mapped exactly are left untouched (see inspect --explain).")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    g = p.add_argument_group("what to remove")
    g.add_argument("--ratio", type=float, default=0.0, help="fraction of channels removed from each group")
    g.add_argument("--ratio-for", action="append", default=[], metavar="GLOB=R",
                   help="ratio for groups whose layer names match GLOB (first match wins; repeatable)")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave groups whose layer names match GLOB untouched (repeatable)")
    g.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank channels of all groups together and remove the lowest --ratio of them")
    g.add_argument("--target-flops", type=float, metavar="F",
                   help="prune until MACs <= F x original: one ratio for all groups, or with --global the "
                        "globally lowest-ranked channels")
    g.add_argument("--min-channels", type=int, default=1, help="channels every group keeps at least (default 1)")
    g.add_argument("--target", choices=list(CHANNEL_MULTIPLE), default="cpu",
                   help="runtime the model is pruned for: sets the default --round-to (cpu: 16, cuda and mobile: "
                        "8, none: 1) and the check that warns about channel counts it runs slowly (default cpu)")
    g.add_argument("--round-to", type=int, metavar="N",
                   help="kept channels a multiple of N (default: from --target)")
    g.add_argument("--criterion", choices=[c.value for c in Criterion], default=Criterion.L1.value,
                   help="channel importance (default l1); activation and apoz are measured on --data")
    g.add_argument("--seed", type=int, default=0, help="seed for --criterion random")
    g.add_argument("--plan", type=Path, help="apply this plan (JSON from --plan-out) instead of planning")
    g.add_argument("--sensitivity", type=Path, metavar="DIR",
                   help="apply the plan derived by `onnxprune sensitivity ... -o DIR`")
    g.add_argument("--recover", choices=[r.value for r in Recover], default="none",
                   help="training-free recovery on --data: bias (removed channels' mean into the consumer bias) or "
                        "lsq (consumers refit by least squares to the original outputs)")
    g.add_argument("--schedule", choices=[s.value for s in Schedule], default=Schedule.ONESHOT.value,
                   help="oneshot (default); iterative: --steps rounds, re-scoring (and recovering) between them; "
                        "layerwise: one group per round, least sensitive on --data first. Same channel counts.")
    g.add_argument("--steps", type=int, default=4, help="rounds of --schedule iterative (default 4)")
    g.add_argument("--metric", metavar="METRIC",
                   help="metric reported on --data and used to order layerwise rounds: " + METRIC_HELP)
    add_data_args(p, "calibration data for --recover, data-driven criteria and schedules; the report then "
                     "shows the metrics before and after", limit=256)
    p.add_argument("--eval-data", type=Path,
                   help="held-out data the report's metrics are measured on (default: --data, the set recovery is "
                        "fitted on; same forms and preprocessing as --data)")
    f = p.add_argument_group("fine-tuning after pruning (needs PyTorch; see onnxprune finetune)")
    f.add_argument("--finetune-epochs", type=float,
                   help="distil the original into the pruned model for this many epochs of --finetune-data")
    f.add_argument("--finetune-data", type=Path, help="training data for --finetune-epochs (same forms as --data)")
    p.add_argument("--plan-out", type=Path, help="write the plan as JSON")
    p.add_argument("--report", type=Path, help="write a JSON report (MACs, params, groups, max_abs_diff)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--verify", action="store_true",
                   help="compare with the original model whose weights reading removed channels are zeroed")
    p.add_argument("--tolerance", type=float, help="--verify relative tolerance (default 1e-5 for float32)")
    p.add_argument("--dump-dir", type=Path, help="save the model after each pass into this folder")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.finetune_epochs is None) != (args.finetune_data is None):
        raise UsageError("--finetune-epochs and --finetune-data go together")
    if args.finetune_epochs is not None and args.finetune_epochs <= 0:
        raise UsageError("--finetune-epochs must be positive")
    guard_paths(args, inputs=("model", "data", "eval_data", "plan", "sensitivity", "finetune_data"),
                files=("output", "plan_out", "report"),
                folders=("dump_dir",))
    ensure_output_path(args.output, args.model)
    for extra in (args.plan_out, args.report):
        if extra is not None:
            ensure_output_path(extra, args.model)
    spec = input_spec(args)
    ratio_for = glob_values("--ratio-for", args.ratio_for, "layer3*=0.5")
    options = PlanOptions(ratio=args.ratio, ratio_for=ratio_for, exclude=tuple(args.exclude),
                          global_ranking=args.global_ranking, target_flops=args.target_flops,
                          min_channels=args.min_channels,
                          round_to=args.round_to if args.round_to is not None else CHANNEL_MULTIPLE[args.target],
                          criterion=Criterion(args.criterion), seed=args.seed)
    if args.plan and args.sensitivity:
        raise UsageError("--plan and --sensitivity both give a plan: choose one")
    plan = PruningPlan.load(args.plan) if args.plan else plan_for_prune(args.sensitivity) if args.sensitivity else None
    model = load_model(args.model)
    checks = Checks(CheckLevel.STRUCTURE if args.verify else CheckLevel.NONE, rel_tol=args.tolerance,
                    inputs=spec, dump_dir=args.dump_dir)
    data = data_from_args(args, model)
    eval_data = data_from_args(args, model, "eval_data")
    schedule = ScheduleOptions(Schedule(args.schedule), args.steps, parse_metric(args.metric))
    if args.finetune_epochs and schedule.schedule is not Schedule.ONESHOT:
        return _run_cycles(args, model, options, spec, data, eval_data)
    with timing() as stages:
        result = prune(model, options, plan=plan, spec=spec, checks=checks, verify=args.verify,
                       recover_with=Recover(args.recover), data=data, schedule=schedule, eval_data=eval_data)
    tuned = _finetune(args, model, result.model, eval_data) if args.finetune_epochs else None
    save(tuned.model if tuned else result.model, args.output, source=args.model)
    slow = result.plan.off_multiple(CHANNEL_MULTIPLE[args.target])
    if slow:
        shown = ", ".join(f"{g} ({k})" for g, k in slow[:4]) + (f" and {len(slow) - 4} more" if len(slow) > 4 else "")
        err_console.print(f"onnxprune: warning: {len(slow)} pruned group(s) keep channel counts that are not "
                          f"multiples of {CHANNEL_MULTIPLE[args.target]}, which ONNX Runtime ({args.target}) runs "
                          f"slowly (depthwise convs most; the model can end up slower than the original): "
                          f"{shown}. --round-to {CHANNEL_MULTIPLE[args.target]} avoids it.",
                          soft_wrap=True, markup=False)
    if args.plan_out:
        result.plan.save(args.plan_out)
    report = result.report.to_json()
    report["target"] = args.target
    report["off_multiple"] = [{"group": g, "kept": k} for g, k in slow]
    report["stages"] = stages
    if tuned is not None:
        report["finetune"] = {k: v for k, v in tuned.to_json().items() if k not in ("trained", "frozen")}
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + "\n", args.model)
    if args.json:
        print_json(report)
        return 0
    r = result.report
    console.print(f"pruned {r.groups_pruned} of {r.groups_total} channel groups ({r.groups_frozen} frozen); "
                  f"MACs {human(r.flops_before)} -> {human(r.flops_after)} "
                  f"({r.flops_after / max(r.flops_before, 1):.1%}), params {human(r.params_before)} -> "
                  f"{human(r.params_after)} ({r.params_after / max(r.params_before, 1):.1%})")
    if r.schedule:
        console.print(f"schedule {r.schedule['schedule']}: {r.schedule['rounds']} rounds")
    if r.quality:
        q = r.quality
        stages = [s for s in ("original", "pruned", "recovered") if s in q]
        keys = list(dict.fromkeys([str(q["metric"])] + [k for k in ("accuracy", "agreement", "rel-l2")
                                                         if k in q["original"]]))
        label = " -> ".join(s if s != "recovered" else f"recovered ({r.recovery['method']})" for s in stages)
        source = "--eval-data (held out)" if q["data"] == "eval" else (
            "--data (the calibration set recovery was fitted on; --eval-data gives a held-out figure)"
            if r.recovery else "--data")
        console.print(f"on {q['samples']} samples of {source}, {label}: "
                      + "; ".join(f"{k} " + " -> ".join(figure(k, q[s][k]) for s in stages) for k in keys))
    if tuned is not None:
        held_out = "--eval-data (held out)" if eval_data is not None else ""
        console.print(f"fine-tuned for {tuned.steps} steps in {tuned.seconds:.1f} s"
                      + (f"; on {held_out}: {tuned.metric} {figure(tuned.metric, tuned.before[tuned.metric])} -> "
                         f"{figure(tuned.metric, tuned.after[tuned.metric])}" if tuned.metric and tuned.before
                         and tuned.after else ""), markup=False)
    if r.max_abs_diff is not None:
        console.print(f"rewrite verified: equal to the masked original (the original with the removed channels' "
                      f"weights zeroed), max abs diff {r.max_abs_diff:.3g} (max |output| {r.max_abs_output:.3g}); "
                      f"this checks the rewrite, not accuracy")
    if r.quality is None and r.groups_pruned:
        err_console.print("onnxprune: warning: no --data: the pruned model's accuracy is unknown, and without "
                          "recovery it usually collapses; measure it with --data (or --eval-data) and recover "
                          "with --recover lsq --data CALIB", soft_wrap=True, markup=False)
    console.print(f"wrote {args.output}" + (f", plan {args.plan_out}" if args.plan_out else "")
                  + (f", report {args.report}" if args.report else ""))
    return 0


def _training() -> ModuleType:
    """onnxprune.training (imports PyTorch, with signals held: see onnxprune.signals)."""
    try:
        return import_deferred("onnxprune.training")
    except ImportError:
        raise UsageError("--finetune-epochs needs PyTorch: pip install 'onnxprune[finetune]'") from None


def _finetune(args: argparse.Namespace, original: onnx.ModelProto, pruned: onnx.ModelProto,
              eval_data: Dataset | None) -> FinetuneResult:
    """Distil ``original`` into ``pruned`` on --finetune-data."""
    training = _training()
    train = load_data(args.finetune_data, pruned, image_preprocess(args))
    return training.finetune(pruned, train, teacher=original, eval_data=eval_data,
                             options=training.FinetuneOptions(epochs=args.finetune_epochs,
                                                              metric=parse_metric(args.metric)))


def _run_cycles(args: argparse.Namespace, model: onnx.ModelProto, options: PlanOptions, spec: InputSpec,
                data: Dataset | None, eval_data: Dataset | None) -> int:
    """``--schedule iterative|layerwise --finetune-epochs N``: prune-retrain cycles (onnxprune.training.cycles)."""
    layerwise = Schedule(args.schedule) is Schedule.LAYERWISE
    if layerwise and data is None:
        raise UsageError("--schedule layerwise orders groups by their measured sensitivity: it needs --data")
    for flag, value in (("--plan", args.plan), ("--sensitivity", args.sensitivity), ("--plan-out", args.plan_out),
                        ("--verify", args.verify), ("--dump-dir", args.dump_dir)):
        if value:
            raise UsageError(f"{flag} does not apply to prune-retrain cycles (each round plans on the model the "
                             f"previous round fine-tuned)")
    training = _training()
    cycles = import_deferred("onnxprune.training.cycles")
    train = load_data(args.finetune_data, model, image_preprocess(args))
    tune = training.FinetuneOptions(epochs=args.finetune_epochs, metric=parse_metric(args.metric))
    if layerwise:
        assert data is not None
        result = cycles.layerwise_finetune_cycles(
            model, options, rounds=args.steps, train=train, data=data, spec=spec, recover_with=Recover(args.recover),
            eval_data=eval_data, finetune_options=tune, metric=parse_metric(args.metric))
    else:
        result = cycles.prune_finetune_cycles(
            model, options, rounds=args.steps, train=train, spec=spec, recover_with=Recover(args.recover), data=data,
            eval_data=eval_data, finetune_options=tune)
    save(result.model, args.output, source=args.model)
    report = {"input": args.model, "output": args.output, "schedule": args.schedule, "rounds": result.to_json()}
    if layerwise:
        report["order"] = [{"group": g, "loss": v} for g, v in result.order]
        report["left_whole"] = list(result.skipped)
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + "\n", args.model)
    if args.json:
        print_json(report)
        return 0
    for r in result.rounds:
        quality = ""
        if r.tuned.metric and r.tuned.before and r.tuned.after:
            quality = (f"; {r.tuned.metric} on --eval-data {figure(r.tuned.metric, r.tuned.before[r.tuned.metric])}"
                       f" -> {figure(r.tuned.metric, r.tuned.after[r.tuned.metric])}")
        console.print(f"round {r.round}: MACs {r.macs_kept:.1%} of the original; fine-tuned {r.tuned.steps} steps in "
                      f"{r.tuned.seconds:.1f} s{quality}", markup=False)
    if result.skipped:
        console.print(f"left whole ({len(result.skipped)} groups no longer prunable as one unit after earlier "
                      f"rounds): {', '.join(result.skipped)}", markup=False)
    console.print(f"wrote {args.output}", markup=False)
    return 0
