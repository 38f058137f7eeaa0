"""``onnxprune run RECIPE MODEL -o DIR`` (one model) and ``onnxprune zoo INPUT -o OUTDIR`` (many)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxprune.cli.common import console
from onnxprune.errors import OnnxPruneError, OutputPathError, UsageError
from onnxprune.paths import check_paths, regular_file
from onnxprune.recipe import Recipe, Step, check_requirements, load_recipe
from onnxprune.verify import parse_input_shapes
from onnxprune.zoo import Backend, Limits, ZooOptions, discover, run_zoo
from onnxprune.zoo.jobs import check_zoo_paths
from onnxprune.zoo.model_run import Status, run_recipe

DEFAULT_RECIPE = Recipe((Step("fold"),), None, "default recipe (fold)")


class ModelsFailed(OnnxPruneError):
    """A zoo run finished, but some models failed or timed out (see the summary)."""

    exit_code = 9


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run one model through a recipe (YAML) into a folder",
                       description="Runs the recipe's steps in order on MODEL; the folder gets each step's output, "
                                   "log.txt and result.json. Written to a temp folder and renamed into place.")
    r.add_argument("recipe", type=Path)
    r.add_argument("model", type=Path)
    r.add_argument("-o", "--output", type=Path, required=True,
                   help="output folder: new, empty, or one onnxprune wrote before (then replaced)")
    r.add_argument("--data", help="--data for every step that takes it (overrides the recipe's)")
    r.add_argument("--eval-data", help="held-out data: --eval-data for prune/compress/emit and the data bench "
                                       "measures on (overrides the recipe's)")
    r.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224")
    r.add_argument("--json", action="store_true", help="print result.json")
    r.set_defaults(run=run_one)

    z = sub.add_parser("zoo", help="run a recipe over a folder or manifest of models, in parallel",
                       description="Every model runs in its own worker; a failure is recorded and the run goes on. "
                                   "OUTDIR/<model>/ per model, OUTDIR/summary.{csv,md,json}. Exit code 9 when any "
                                   "model failed.")
    z.add_argument("input", type=Path, help="a folder (searched recursively for .onnx) or a manifest (.yaml/.csv)")
    z.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    z.add_argument("--recipe", type=Path, help="recipe YAML (default: fold only)")
    z.add_argument("--jobs", type=int, default=1, help="models at a time (default 1)")
    z.add_argument("--backend", choices=[b.value for b in Backend], default="local")
    z.add_argument("--address", help="address of the Ray cluster to run on (required with --backend ray; the "
                                     "cluster is your own security boundary)")
    z.add_argument("--resume", action="store_true",
                   help="skip models already done (ok) with the same recipe and model bytes")
    z.add_argument("--timeout", type=float, default=3600, help="seconds per model (default 3600; 0: none)")
    z.add_argument("--memory-limit", type=int, metavar="MB", help="address-space cap per local worker")
    z.add_argument("--json", action="store_true", help="print the summary as JSON")
    z.set_defaults(run=run_many)


def run_one(args: argparse.Namespace) -> int:
    regular_file(args.model, "ONNX model")
    recipe = load_recipe(args.recipe)
    if args.data or args.eval_data:
        recipe = Recipe(recipe.steps, args.data or recipe.data, recipe.source, args.eval_data or recipe.eval_data)
    check_paths(inputs=[args.recipe], folders=[("-o", args.output)])
    result = run_recipe(recipe, args.model, args.output, parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_result(result, args.output)
    if result["status"] != Status.OK:
        raise ModelsFailed(f"{args.model}: {result['error']} (log: {args.output / 'log.txt'})")
    return 0


def _print_result(result: dict[str, object], folder: Path) -> None:
    console.print(f"{result['name']}: {result['status']} — steps {' '.join(result['steps_done']) or 'none'}; "
                  f"{result['seconds']:.1f} s; {folder}", markup=False)


def run_many(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} must be >= 1")
    if args.address and args.backend != "ray":
        raise UsageError("--address needs --backend ray")
    if args.backend == "ray" and not args.address:
        raise UsageError("--backend ray needs --address of a Ray cluster you run (onnxprune does not start one: a "
                         "local Ray listens on every interface without authentication); on one machine use "
                         "--backend local")
    if args.output.exists() and not args.output.is_dir():
        raise OutputPathError(f"{args.output}: exists and is not a folder")
    recipe = load_recipe(args.recipe) if args.recipe else DEFAULT_RECIPE
    jobs = discover(args.input, recipe, exclude=args.output)
    for job in jobs:
        check_requirements(job.recipe, f"{job.name} ({job.recipe.source})")
    check_zoo_paths(args.input, args.recipe, jobs, args.output)
    options = ZooOptions(Backend(args.backend), args.jobs,
                         Limits(args.timeout or None, args.memory_limit), args.resume, args.address)
    run = run_zoo(jobs, args.output, options)
    t = run.totals
    if args.json:
        print(json.dumps({"totals": t, "models": run.rows}, indent=2))
    else:
        console.print(f"{t['models']} models: {t['ok']} ok, {t['resumed']} resumed, {t['failed']} failed, "
                      f"{t['timeout']} timed out, {t['not_run']} not run in {t['wall_seconds']:.1f} s "
                      f"-> {args.output / 'summary.md'}", markup=False)
    if run.interrupted is not None:
        raise run.interrupted
    if run.failed:
        raise ModelsFailed(f"{run.failed} of {len(jobs)} models failed (see {args.output / 'summary.md'})")
    return 0
