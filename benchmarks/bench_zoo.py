"""Zoo throughput: models per minute for ``onnxprune zoo`` with --jobs 1 and 2 (local), and on a Ray cluster
when one is given (``--ray-address``; onnxprune never starts a Ray of its own).

The zoo: every reference architecture of ``models/`` in its ``legacy`` export form (ResNet-50 included) plus
one truncated file (it must fail and not stop the run), listed in a manifest with each model's input shape.
Recipe: fold, prune to 70% of the MACs, compress at 80% connection sparsity (no data). The runs go one after
another on the same machine; each row states its wall time, and the script checks that all give the same
per-model statuses and results.

Usage: python -m benchmarks.bench_zoo [--out benchmarks/results] [--ray-address ADDR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import machine
from onnxprune.recipe import parse_recipe
from onnxprune.zoo import Backend, Limits, ZooOptions, discover, run_zoo

RECIPE = """
steps:
  - fold
  - prune: {target-flops: 0.7}
  - compress: {sparsity: 0.8}
"""
RUNS = ((Backend.LOCAL, 1), (Backend.LOCAL, 2))
SAME = ("status", "error", "steps_done", "macs_after", "params_after", "bytes_after", "compressed_bytes")


def build_zoo(root: Path) -> Path:
    """The models, and a YAML manifest giving each its export input shape (so MACs are measured)."""
    from models.architectures import ZOO
    from models.zoo_cache import zoo_model

    lines = ["models:"]
    for name, entry in ZOO.items():
        shutil.copy(zoo_model(name, "legacy"), root / f"{name}.onnx")
        lines.append(f"  - {{path: {name}.onnx, input_shapes: {{input: {list(entry.input_shape)}}}}}")
    (root / "truncated.onnx").write_bytes((root / "resnet18.onnx").read_bytes()[:4096])
    lines.append("  - {path: truncated.onnx}")
    manifest = root / "zoo.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--ray-address", help="also run on this Ray cluster (onnxprune never starts one itself)")
    args = parser.parse_args(argv)
    recipe = parse_recipe(RECIPE, "bench recipe")
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Path(tmp) / "zoo"
        zoo.mkdir()
        jobs = discover(build_zoo(zoo), recipe)
        runs = []
        for backend, workers in RUNS + (((Backend.RAY, 2),) if args.ray_address else ()):
            run = run_zoo(jobs, Path(tmp) / f"out-{backend.value}-{workers}",
                          ZooOptions(backend, workers, Limits(timeout=1800), address=args.ray_address))
            runs.append((backend, workers, run))
            print(json.dumps({"backend": backend.value, "jobs": workers, **run.totals}), flush=True)
    reference = {r["name"]: {k: r[k] for k in SAME} for r in runs[0][2].rows}
    agree = all({r["name"]: {k: r[k] for k in SAME} for r in run.rows} == reference for _, _, run in runs)
    rows = [{"backend": b.value, "jobs": w, **run.totals} for b, w, run in runs]
    models = runs[0][2].rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo.json").write_text(json.dumps({"runs": rows, "models": models, "agree": agree}, indent=2) + "\n")
    base = rows[0]["wall_seconds"]
    lines = ["# onnxprune zoo throughput", "", "Command: `python -m benchmarks.bench_zoo`  ", f"Machine: {machine()}  ",
             f"Zoo: {len(models)} models ({len(models) - 1} reference architectures, legacy export, plus a truncated "
             f"file); recipe: fold, prune --target-flops 0.7, compress --sparsity 0.8. The {len(runs)} runs give the "
             f"same per-model results: **{'yes' if agree else 'NO'}**.", "",
             "| backend | jobs | ok | failed | wall s | models/min | speedup vs jobs 1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['jobs']} | {r['ok']} | {r['failed'] + r['timeout']} | "
                     f"{r['wall_seconds']:.1f} | {r['models_per_minute']:.1f} | {base / r['wall_seconds']:.2f}x |")
    lines += ["", "| model | status | MACs before → after | size before → after | compressed | s | error |",
              "|---|---|---|---|---|---|---|"]
    for m in models:
        def mb(key: str) -> str:
            return "" if m.get(key) is None else f"{int(m[key]) / 1e6:.2f} MB"

        def macs(key: str) -> str:
            return "" if m.get(key) is None else f"{int(m[key]) / 1e6:.1f}M"

        lines.append(f"| {m['name']} | {m['status']} | {macs('macs_before')} → {macs('macs_after')} | "
                     f"{mb('bytes_before')} → {mb('bytes_after')} | {mb('compressed_bytes')} | {m['seconds']:.1f} | "
                     f"{str(m['error']).replace('|', '/')[:160]} |")
    (args.out / "zoo.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
