"""Benchmark `onnxprune fold` against onnxsim's and onnxslim's BatchNorm fusion on the reference zoo.

For every zoo model in the forms that still contain BatchNormalization (legacy_bn, paddle) and each tool:
- in-process wall time (ModelProto in, ModelProto out), median over --reps interleaved rounds;
- CLI wall time (file in, file out, including interpreter start-up), median over --cli-reps rounds;
- BatchNormalization nodes left, and max abs diff against the original on seeded inputs (batch 2), both run in
  ONNX Runtime with graph optimizations disabled.

onnxsim and onnxslim are general simplifiers (constant folding, many fusions), so they do more than fold BN;
the comparison is what a user who wants BN folded would run. Writes fold_vs_onnxsim.md / .json to --out.

Usage: python -m benchmarks.bench_fold [--out benchmarks/results] [--reps 5] [--cli-reps 3] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

import onnxprune
from models.architectures import ZOO
from models.zoo_cache import zoo_model
from onnxprune.interface import repair_interface
from onnxprune.normalize import normalize
from onnxprune.verify import InputSpec, make_session, random_inputs, resolve_input_shapes, run

FORMS = ("legacy_bn", "paddle")


def ours(model: onnx.ModelProto) -> onnx.ModelProto:
    repair_interface(model)                                    # what `onnxprune.load` does, then fold
    return onnxprune.fold(normalize(model, copy=False)).model


def onnxsim_fold(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    out, _ = onnxsim.simplify(model, check_n=0)
    return out


def onnxslim_fold(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


TOOLS: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "onnxprune": ours, "onnxsim": onnxsim_fold, "onnxslim": onnxslim_fold}
def _script(name: str) -> str:
    """A console script of the running environment (its bin/ need not be on PATH)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


CLI: dict[str, Callable[[Path, Path], list[str]]] = {
    "onnxprune": lambda i, o: [sys.executable, "-m", "onnxprune", "fold", str(i), "-o", str(o)],
    "onnxsim": lambda i, o: [_script("onnxsim"), str(i), str(o)],
    "onnxslim": lambda i, o: [_script("onnxslim"), str(i), str(o)],
}


def max_abs_diff(original: onnx.ModelProto, rewritten: onnx.ModelProto, shape: tuple[int, ...]) -> float:
    spec = InputSpec({"input": (2,) + shape[1:]})
    feeds = random_inputs(original, resolve_input_shapes(original, spec), seed=0)
    ref = run(make_session(original), feeds)
    got = run(make_session(rewritten), feeds)
    return max(float(np.abs(ref[k].astype(np.float64) - got[k]).max()) for k in ref)


def bench_model(name: str, form: str, reps: int, cli_reps: int) -> list[dict[str, object]]:
    original = onnx.load(zoo_model(name, form))
    # Paddle-style files declare -1 dims that ONNX Runtime refuses as they are; every tool gets the file with its
    # interface repaired (what `onnxprune.load` does first), so all three start from the same runnable model
    repair_interface(original)
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    outputs: dict[str, onnx.ModelProto] = {}
    for r in range(reps):
        order = list(TOOLS)[r % 3:] + list(TOOLS)[: r % 3]  # rotate who goes first
        for tool in order:
            copy = onnx.ModelProto()
            copy.CopyFrom(original)
            start = time.perf_counter()
            outputs[tool] = TOOLS[tool](copy)
            times[tool].append(time.perf_counter() - start)
    cli_times: dict[str, list[float]] = {t: [] for t in CLI}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.{form}.onnx"
        onnx.save(original, path)
        for r in range(cli_reps):
            for tool in list(CLI)[r % 3:] + list(CLI)[: r % 3]:
                out = Path(tmp) / f"{tool}.onnx"
                start = time.perf_counter()
                subprocess.run(CLI[tool](path, out), check=True, capture_output=True)
                cli_times[tool].append(time.perf_counter() - start)
                out.unlink()
    rows = []
    for tool in TOOLS:
        m = outputs[tool]
        rows.append({
            "model": name, "form": form, "tool": tool,
            "bn_before": sum(n.op_type == "BatchNormalization" for n in original.graph.node),
            "bn_after": sum(n.op_type == "BatchNormalization" for n in m.graph.node),
            "nodes_before": len(original.graph.node), "nodes_after": len(m.graph.node),
            "in_process_s": statistics.median(times[tool]),
            "cli_s": statistics.median(cli_times[tool]),
            "max_abs_diff": max_abs_diff(original, m, ZOO[name].input_shape),
        })
    return rows


def to_markdown(rows: list[dict[str, object]], command: str) -> str:
    by_key: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
    for r in rows:
        by_key.setdefault((str(r["model"]), str(r["form"])), {})[str(r["tool"])] = r
    lines = [
        "# `onnxprune fold` vs onnxsim and onnxslim",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or platform.system()}, Python "
        f"{platform.python_version()}, onnx {onnx.__version__}, onnxruntime {ort.__version__}",
        "",
        "Times are medians of interleaved runs. *in-proc* = ModelProto in, ModelProto out (ours includes "
        "normalization and shape inference); *CLI* = file to file including interpreter start-up. "
        "Ratio = tool time / onnxprune time (>1: onnxprune is faster). Max abs diff vs the original model, ORT "
        "graph optimizations disabled, batch 2, seeded normal inputs. Every tool gets the model with its "
        "interface repaired (Paddle-style -1 dims, which ONNX Runtime refuses as they are).",
        "",
        "| model | form | BN | BN left (ours / sim / slim) | nodes | nodes left (ours / sim / slim) "
        "| ours in-proc s | onnxsim / ours | onnxslim / ours "
        "| ours CLI s | onnxsim CLI / ours | onnxslim CLI / ours | max abs diff (ours / sim / slim) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, form), t in by_key.items():
        o, s, sl = t["onnxprune"], t["onnxsim"], t["onnxslim"]
        lines.append(
            f"| {model} | {form} | {o['bn_before']} | {o['bn_after']} / {s['bn_after']} / {sl['bn_after']} "
            f"| {o['nodes_before']} | {o['nodes_after']} / {s['nodes_after']} / {sl['nodes_after']} "
            f"| {o['in_process_s']:.3f} | {s['in_process_s'] / o['in_process_s']:.2f} "
            f"| {sl['in_process_s'] / o['in_process_s']:.2f} | {o['cli_s']:.2f} | {s['cli_s'] / o['cli_s']:.2f} "
            f"| {sl['cli_s'] / o['cli_s']:.2f} "
            f"| {o['max_abs_diff']:.2g} / {s['max_abs_diff']:.2g} / {sl['max_abs_diff']:.2g} |")
    ratios = [t["onnxsim"]["in_process_s"] / t["onnxprune"]["in_process_s"] for t in by_key.values()]
    cli = [t["onnxsim"]["cli_s"] / t["onnxprune"]["cli_s"] for t in by_key.values()]
    fewer = sum(t["onnxprune"]["nodes_after"] <= min(t["onnxsim"]["nodes_after"], t["onnxslim"]["nodes_after"])
                for t in by_key.values())
    lines += ["", f"Median onnxsim/onnxprune time ratio: in-process {statistics.median(ratios):.2f}, "
                  f"CLI {statistics.median(cli):.2f} (min {min(ratios):.2f} / {min(cli):.2f}). Nodes left: "
                  f"onnxprune's fold (constant subexpressions and static shape arithmetic folded on load) has no more "
                  f"nodes than the fewer of onnxsim's and onnxslim's in {fewer} of {len(by_key)} cases."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cli-reps", type=int, default=3)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--forms", default=",".join(FORMS))
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        for form in args.forms.split(","):
            rows += bench_model(name, form, args.reps, args.cli_reps)
            print(f"{name}.{form}: " + ", ".join(f"{r['tool']} {r['in_process_s']:.3f}s/{r['cli_s']:.2f}s "
                                                  f"diff {r['max_abs_diff']:.2g}" for r in rows[-3:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_fold " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "fold_vs_onnxsim.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "fold_vs_onnxsim.md").write_text(to_markdown(rows, command.strip()))
    print(f"wrote {args.out / 'fold_vs_onnxsim.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
