"""Scorecard: every zoo architecture in every export form, through every command a user runs.

Cells, each ``ok``, a clean error (the CLI's one-line message and non-zero exit) or a crash (an internal
error: a bug):

- inspect: prunable MACs fraction (MACs of layers whose input or output channels are prunable; at the entry's
  input shape) and the reasons of the frozen groups;
- fold: BatchNormalization nodes left after ``fold --verify``;
- prune: ``prune --ratio 0.3 --verify`` (the default target, cpu: kept counts rounded to 16);
- recover: ``prune --ratio 0.3 --recover lsq`` on 64 generated samples (standard normal inputs at the entry's
  shape), reported as the output's relative L2 error to the original, pruned -> recovered;
- emit cpu / mobile / cuda: ``emit --target ...`` (cuda is checked structurally and numerically on the CPU
  provider when no GPU is present);
- speedup: the default prune (``--ratio 0.3``) against the original, ONNX Runtime CPU, all graph optimizations,
  1 thread, batch 1, interleaved medians of --runs rounds (128x128 for fully convolutional models, the export
  size otherwise), measured after all other cells, one model at a time; for the ``legacy_bn`` form the same
  ratio with exact channel counts (``--target none``, the old default) is run in the same rounds.

Usage: python -m benchmarks.bench_exports [--out benchmarks/results] [--models a,b] [--forms x,y] [--runs 40]
       [--jobs 2] [--update]
Writes exports.json and exports.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import interleaved_medians, machine
from models.architectures import ZOO
from models.export_zoo import FORMS
from onnxprune.plan import CHANNEL_MULTIPLE

SPATIAL = 128
RATIO = 0.3
SAMPLES = 64
STEPS = ("inspect", "fold", "prune", "recover", "emit_cpu", "emit_mobile", "emit_cuda")


@dataclass
class Row:
    model: str
    form: str
    cells: dict[str, str] = field(default_factory=dict)      # step -> "ok" | "error: ..." | "CRASH: ..."
    prunable_fraction: float | None = None
    frozen_reasons: list[str] = field(default_factory=list)
    bn_left: int | None = None
    recover_rel_l2: tuple[float, float] | None = None
    speedup: float | None = None
    macs_ratio: float | None = None
    speedup_exact: float | None = None  # legacy_bn only: the same ratio with exact counts (--target none)
    seconds: float = 0.0


def _cli(argv: list[str]) -> tuple[str, str]:
    """Run the CLI in-process; (cell status, stdout)."""
    from onnxprune.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse --help paths; not expected here
            rc = int(e.code or 0)
    message = " ".join(err.getvalue().split())
    if rc == 0:
        return "ok", out.getvalue()
    if "internal error" in message:
        return f"CRASH: {message[:200]}", out.getvalue()
    return f"error: {message[:200]}", out.getvalue()


def bench_shape(name: str, fixed: tuple[int, ...] | None) -> tuple[int, ...]:
    entry = ZOO[name]
    if fixed is not None:
        return fixed
    if entry.dynamic_spatial:
        return (1, entry.input_shape[1], SPATIAL, SPATIAL)
    return entry.input_shape


def score(name: str, form: str) -> Row:
    """Every correctness cell of one model in one form (speed is measured later, alone)."""
    import onnxprune
    from models.zoo_cache import zoo_model

    row = Row(name, form)
    start = time.perf_counter()
    src = str(zoo_model(name, form))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        try:
            model = onnxprune.load(src)
            input_name = model.graph.input[0].name
        except Exception as e:  # the file cannot be read at all: every cell says why
            status = f"error: {' '.join(str(e).split())[:200]}"
            row.cells = {s: status for s in STEPS}
            return row
        shape = "x".join(map(str, ZOO[name].input_shape))
        shape_arg = ["--input-shape", f"{input_name}={shape}"]
        status, out = _cli(["inspect", src, "--json", *shape_arg])
        row.cells["inspect"] = status
        if status == "ok":
            info = json.loads(out)
            row.prunable_fraction = info["prunable_flops_fraction"]
            row.frozen_reasons = sorted({g["reason"] for g in info["groups"] if not g["prunable"]})
        status, out = _cli(["fold", src, "-o", str(t / "folded.onnx"), "--verify", "--json", *shape_arg])
        row.cells["fold"] = status
        if status == "ok":
            row.bn_left = json.loads(out)["batchnorm_after"]
        row.cells["prune"], _ = _cli(["prune", src, "-o", str(t / "pruned.onnx"), "--ratio", str(RATIO), "--verify",
                                      *shape_arg])
        x = np.random.default_rng(0).standard_normal((SAMPLES, *ZOO[name].input_shape[1:])).astype(np.float32)
        np.savez(t / "calib.npz", **{input_name: x})
        status, _ = _cli(["prune", src, "-o", str(t / "recovered.onnx"), "--ratio", str(RATIO), "--recover", "lsq",
                          "--data", str(t / "calib.npz"), "--report", str(t / "recover.json"), *shape_arg])
        row.cells["recover"] = status
        if status == "ok":
            rec = json.loads((t / "recover.json").read_text())["recovery"]
            row.recover_rel_l2 = (rec["before"]["rel-l2"], rec["after"]["rel-l2"])
        for target in ("cpu", "mobile", "cuda"):
            row.cells[f"emit_{target}"], _ = _cli(["emit", src, "--target", target, "-o", str(t / f"emit_{target}"),
                                                   *shape_arg])
    row.seconds = time.perf_counter() - start
    return row


def speed(row: Row, runs: int) -> None:
    """Speedup of the default prune over the original, measured interleaved in this process."""
    import onnxprune
    from benchmarks.common import session
    from models.zoo_cache import zoo_model
    from onnxprune.flops import count_costs
    from onnxprune.plan import PlanOptions
    from onnxprune.pruning import prune
    from onnxprune.verify import random_inputs

    model = onnxprune.load(zoo_model(row.model, row.form))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed = tuple(d.dim_value for d in dims) if all(d.dim_value > 0 for d in dims) else None
    shapes = {model.graph.input[0].name: bench_shape(row.model, fixed)}
    pruned = prune(model, PlanOptions(ratio=RATIO, round_to=CHANNEL_MULTIPLE["cpu"])).model
    feeds = random_inputs(model, shapes)
    sessions = {"original": session(model, 1), "pruned": session(pruned, 1)}
    if row.form == "legacy_bn":
        sessions["exact"] = session(prune(model, PlanOptions(ratio=RATIO, round_to=1)).model, 1)
    medians = interleaved_medians(sessions, feeds, runs)
    row.speedup = medians["original"] / medians["pruned"]
    if "exact" in medians:
        row.speedup_exact = medians["original"] / medians["exact"]
    row.macs_ratio = count_costs(pruned, shapes).macs / max(count_costs(model, shapes).macs, 1)


def _score_task(args: tuple[str, str]) -> Row:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return score(*args)


def markdown(rows: list[Row], runs: int) -> str:
    cells = [c for r in rows for c in r.cells.values()]
    ok = sum(c == "ok" for c in cells)
    crashes = sum(c.startswith("CRASH") for c in cells)
    fractions = [r.prunable_fraction for r in rows if r.prunable_fraction is not None]
    slower = [r for r in rows if r.speedup is not None and r.speedup < 1.0]
    lines = [
        "# Export scorecard: every zoo architecture x export form",
        "",
        f"`python -m benchmarks.bench_exports` on {machine()}.",
        "",
        f"- cells ok: **{ok} / {len(cells)}**, clean errors: {len(cells) - ok - crashes}, crashes: {crashes}",
        f"- prunable MACs fraction >= 0.95: {sum(f >= 0.95 for f in fractions)} / {len(fractions)} "
        f"(the rest list their frozen groups' reasons below)",
        f"- default prune (`--ratio {RATIO}`, kept counts rounded to {CHANNEL_MULTIPLE['cpu']} for ONNX Runtime "
        f"CPU) slower than the "
        f"original: {len(slower)} / {sum(r.speedup is not None for r in rows)}"
        + (f" ({', '.join(f'{r.model}/{r.form} {r.speedup:.2f}x' for r in slower)})" if slower else ""),
        "",
        "Prunable fraction: MACs of layers whose input or output channels are in a prunable group, at the export "
        "input shape. recover: relative L2 error of the output against the original on the 64 generated "
        f"calibration samples, pruned -> recovered by `--recover lsq`. Speedup: original / pruned median latency, "
        f"ONNX Runtime CPU, 1 thread, batch 1, {runs} interleaved rounds, at 128x128 for fully convolutional models "
        "(the export size otherwise); MACs: pruned / original at that size.",
        "",
        "| model | form | prunable | BN left | prune | recover (rel-L2) | emit cpu | emit mobile | emit cuda | "
        "speedup (MACs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: Row, step: str, text: str | None = None) -> str:
        status = row.cells.get(step, "not run")
        return (text or "ok") if status == "ok" else status.replace("|", "/")

    for r in rows:
        frac = f"{r.prunable_fraction:.3f}" if r.prunable_fraction is not None else "?"
        rec = f"ok ({r.recover_rel_l2[0]:.3f} -> {r.recover_rel_l2[1]:.3f})" if r.recover_rel_l2 else None
        spd = f"{r.speedup:.2f}x ({r.macs_ratio:.2f})" if r.speedup is not None else "-"
        lines.append(f"| {r.model} | {r.form} | {cell(r, 'inspect', frac)} | "
                     f"{cell(r, 'fold', str(r.bn_left))} | {cell(r, 'prune')} | {cell(r, 'recover', rec)} | "
                     f"{cell(r, 'emit_cpu')} | {cell(r, 'emit_mobile')} | {cell(r, 'emit_cuda')} | {spd} |")
    exact = [r for r in rows if r.speedup_exact is not None]
    if exact:
        lines += ["", f"## Default rounding vs exact counts (`legacy_bn`, same {runs} interleaved rounds)", "",
                  f"| model | `--ratio {RATIO}` (rounded to {CHANNEL_MULTIPLE['cpu']}) | exact counts (`--target none`) |",
                  "|---|---|---|"]
        lines += [f"| {r.model} | {r.speedup:.2f}x | {r.speedup_exact:.2f}x |" for r in exact]
    reasons = sorted({(r.model, reason) for r in rows for reason in r.frozen_reasons})
    lines += ["", "## Frozen groups (all forms)", ""]
    for model in dict.fromkeys(m for m, _ in reasons):
        shown = sorted({_reason_kind(reason) for m, reason in reasons if m == model})
        lines.append(f"- {model}: " + "; ".join(shown))
    return "\n".join(lines) + "\n"


def _reason_kind(reason: str) -> str:
    """A frozen reason without the node/tensor name (names differ between export forms)."""
    for kind in ("reaches graph output", "graph input", "normalizes across the channel axis",
                 "reduces over the channel axis"):
        if kind in reason:
            return kind
    return reason


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=2, help="processes for the correctness cells (speed: one at a time)")
    ap.add_argument("--update", action="store_true",
                    help="re-score only --models x --forms and keep the other rows of an existing exports.json")
    args = ap.parse_args(argv)
    tasks = [(m, f) for m in args.models.split(",") for f in args.forms.split(",")]
    for name, form in tasks:  # export once, before the workers read the cache
        from models.zoo_cache import zoo_model

        with contextlib.redirect_stdout(io.StringIO()):
            zoo_model(name, form)
    rows: list[Row] = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for i, row in enumerate(pool.imap(_score_task, tasks), 1):
            rows.append(row)
            bad = {k: v for k, v in row.cells.items() if v != "ok"}
            print(f"[{i}/{len(tasks)}] {row.model}/{row.form}: {len(row.cells) - len(bad)}/{len(row.cells)} ok"
                  + (f" ({', '.join(bad)})" if bad else "") + f", {row.seconds:.1f} s", flush=True)
    for i, row in enumerate(rows, 1):
        if row.cells.get("prune") == "ok":
            speed(row, args.runs)
            print(f"[speed {i}/{len(rows)}] {row.model}/{row.form}: {row.speedup:.2f}x", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.update and (args.out / "exports.json").is_file():
        fresh = {(r.model, r.form): r for r in rows}
        old = [Row(**{**d, "recover_rel_l2": tuple(d["recover_rel_l2"]) if d["recover_rel_l2"] else None})
               for d in json.loads((args.out / "exports.json").read_text())["rows"]]
        rows = [fresh.pop((r.model, r.form), r) for r in old] + list(fresh.values())
    (args.out / "exports.json").write_text(json.dumps({"machine": machine(), "runs": args.runs,
                                                       "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    (args.out / "exports.md").write_text(markdown(rows, args.runs))
    print(f"wrote {args.out / 'exports.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
