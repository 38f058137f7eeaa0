"""``onnxprune prune MODEL -o OUT``: remove low-importance filters and propagate to every consumer."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import (
    add_data_args,
    add_input_shape_args,
    cli_text,
    console,
    err_console,
    figure,
    human,
    print_json,
    step_from_args,
)
from onnxprune.importance import Criterion
from onnxprune.metrics import METRIC_HELP
from onnxprune.plan import CHANNEL_MULTIPLE, Align, Allocate
from onnxprune.recover import Recover
from onnxprune.schedule import Schedule
from onnxprune.steps.base import StepContext, StepResult
from onnxprune.steps.prune import PruneOutcome, PruneStep


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
    lat = p.add_argument_group("latency (the recommended way to ask for speed)")
    lat.add_argument("--target-latency", type=float, metavar="R",
                     help="prune until the predicted latency <= R x the original's, measured on this machine "
                          "(--latency-table, or profiled now on --target with --threads); the report gives the "
                          "prediction and the latency measured interleaved against the original")
    lat.add_argument("--latency-table", type=Path, metavar="TABLE.json",
                     help="latency table from `onnxprune profile` of this model (default: profile now)")
    lat.add_argument("--align", choices=[a.value for a in Align], default=Align.NONE.value,
                     help="latency: move each count planned by --ratio/--target-flops up to the nearest count that "
                          "is faster than every larger one (default none: --round-to)")
    lat.add_argument("--allocate", choices=[a.value for a in Allocate], default=Allocate.WEIGHTS.value,
                     help="how the latency budget is shared among groups: weights (default: each channel's score "
                          "times the MACs it carries) or sensitivity (each group pruned alone to each of its "
                          "latency steps, the loss of --metric measured on --data: least loss per millisecond "
                          "saved; slower to plan, better where some layers matter more than their weights say)")
    lat.add_argument("--sensitivity-samples", type=int, default=128, metavar="N",
                     help="--allocate sensitivity: samples of --data (evenly spaced) each step is measured on "
                          "(default 128; planning time grows with N)")
    lat.add_argument("--threads", type=int, default=1,
                     help="intra-op threads the latency is profiled and measured with (default 1)")
    lat.add_argument("--cache", metavar="DIR|none",
                     help="profile measurement cache (default $ONNXPRUNE_CACHE_DIR or ~/.cache/onnxprune)")
    g.add_argument("--min-channels", type=int, default=1, help="channels every group keeps at least (default 1)")
    g.add_argument("--target", choices=list(CHANNEL_MULTIPLE), default="cpu",
                   help="runtime the model is pruned for: sets the default --round-to (cpu: 16, cuda and mobile: "
                        "8, none: 1) and the check that warns about channel counts it runs slowly (default cpu)")
    g.add_argument("--round-to", type=int, metavar="N",
                   help="kept channels a multiple of N (default: from --target)")
    g.add_argument("--criterion", choices=[c.value for c in Criterion], default=Criterion.L1.value,
                   help="channel importance (default l1); activation and apoz are measured on --data; uniform: "
                        "all equal, the first channels kept (for retraining from scratch; with --target-latency "
                        "--global: each step removes the fewest MACs per millisecond saved)")
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
                   help="metric reported on --data, used to order layerwise rounds and by --allocate sensitivity: "
                        + METRIC_HELP)
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
    step = step_from_args(PruneStep, args)
    outcome = step.run(StepContext(Path(args.model), Path(args.output), args.report))
    for note in outcome.notes:
        err_console.print(f"onnxprune: warning: {cli_text(note)}", soft_wrap=True, markup=False)
    report = outcome.report
    if not isinstance(outcome.details, PruneOutcome):
        return _print_cycles(args, outcome)
    result, tuned, eval_data = outcome.details.pruned, outcome.details.tuned, outcome.details.eval_data
    if args.json:
        print_json(report)
        return 0
    r = result.report
    console.print(f"pruned {r.groups_pruned} of {r.groups_total} channel groups ({r.groups_frozen} frozen); "
                  f"MACs {human(r.flops_before)} -> {human(r.flops_after)} "
                  f"({r.flops_after / max(r.flops_before, 1):.1%}), params {human(r.params_before)} -> "
                  f"{human(r.params_after)} ({r.params_after / max(r.params_before, 1):.1%})")
    if r.schedule:
        console.print(f"schedule {r.schedule.schedule}: {r.schedule.rounds} rounds")
    if r.latency:
        lat = r.latency
        shapes = ", ".join("x".join(map(str, v)) for v in r.input_shapes.values())
        requested = f"requested {lat.requested:g}, " if lat.requested is not None else ""
        measured = f", measured {lat.measured_ratio:.3f} ({lat.measured_original_ms:.3g} -> {lat.measured_ms:.3g} ms, " \
                   f"medians; the ratio the median of {lat.rounds} interleaved rounds' ratios)" if lat.measured_ratio is not None else ""
        console.print(f"latency on {lat.target}, {lat.threads} thread(s), random inputs {shapes}: {requested}"
                      f"predicted {lat.predicted_ratio:.3f}{measured}", soft_wrap=True)
        if lat.losses is not None:
            points = sum(len(c) - 1 for c in lat.losses.curves.values())
            console.print(f"  budget shared by sensitivity: loss of {lat.losses.metric} on {lat.losses.samples} "
                          f"samples of --data, measured at {points} steps of {len(lat.losses.curves)} groups "
                          f"(report: latency.sensitivity)", soft_wrap=True)
        if len(lat.tries) > 1:
            console.print("  corrected by measurement: " + "; ".join(
                f"planned for {b:.3f}, predicted {p:.3f}, measured {m:.3f}" for b, p, m in lat.tries), soft_wrap=True)
    if r.quality:
        q = r.quality
        stages = q.stages()
        values = {"original": q.original, "pruned": q.pruned, "recovered": q.recovered or {}}
        keys = list(dict.fromkeys([q.metric] + [k for k in ("accuracy", "agreement", "rel-l2") if k in q.original]))
        label = " -> ".join(s if s != "recovered" or r.recovery is None else f"recovered ({r.recovery.method})"
                            for s in stages)
        source = "--eval-data (held out)" if q.data == "eval" else (
            "--data (the calibration set recovery was fitted on; --eval-data gives a held-out figure)"
            if r.recovery else "--data")
        console.print(f"on {q.samples} samples of {source}, {label}: "
                      + "; ".join(f"{k} " + " -> ".join(figure(k, values[s][k]) for s in stages) for k in keys))
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
    console.print(f"wrote {args.output}" + (f", plan {args.plan_out}" if args.plan_out else "")
                  + (f", report {args.report}" if args.report else ""))
    return 0




def _print_cycles(args: argparse.Namespace, outcome: StepResult) -> int:
    result = outcome.details
    if args.json:
        print_json(outcome.report)
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
