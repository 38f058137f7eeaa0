"""The benchmark suite behind `make bench`: every zoo model and every digits model through the pipeline, timed.

For each model: original (exported with BN kept), folded, pruned 30% and 50% (L1, with and without
`--round-to 8`), emitted for cpu (portable offline optimization) and cpu int8 (static; digits models calibrated
on 128 training digits, the others on random inputs). All variants of one model are timed together by
`onnxprune bench` (interleaved, ORT CPU, batch 1, 1 thread, --runs rounds). Efficiency = speedup / (MACs
original / MACs variant) (int8 and ORT-optimized variants do the original's MACs). Digits models also report
top-1 on the 450 test digits.

Usage: python -m benchmarks.bench_suite [--out benchmarks/results] [--runs 30] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import onnxprune
from benchmarks.common import DIGITS, machine
from models.architectures import ZOO
from models.zoo_cache import zoo_model
from onnxprune.benchmark import BenchOptions, run_benchmark
from onnxprune.emission import EmitOptions, Int8, Target, emit
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec

DIGITS_MODELS = ("studentnet", "vgg16_bn", "resnet56")
VARIANTS = ("original", "folded", "pruned 30%", "pruned 30% r8", "pruned 50%", "pruned 50% r8", "cpu", "cpu int8")


def _shape(name: str, digits: bool) -> tuple[int, ...]:
    if digits:
        return (1, 3, 32, 32)
    entry = ZOO[name]
    return (1, 3, 128, 128) if entry.dynamic_spatial else (1,) + entry.input_shape[1:]


def build_variants(name: str, digits: bool, work: Path) -> dict[str, Path]:
    src = DIGITS / f"{name}.onnx" if digits else zoo_model(name, "legacy_bn")
    shape = _shape(name, digits)
    spec = InputSpec({"input": shape})
    paths = {"original": Path(src)}
    folded = onnxprune.fold(onnxprune.load(src)).model
    paths["folded"] = work / "folded.onnx"
    onnxprune.save(folded, paths["folded"])
    for ratio in (0.3, 0.5):
        for round_to in (1, 8):
            key = f"pruned {ratio:.0%}" + (" r8" if round_to > 1 else "")
            paths[key] = work / f"{key.replace(' ', '_').replace('%', '')}.onnx"
            onnxprune.save(prune(folded, PlanOptions(ratio=ratio, round_to=round_to), spec=spec).model, paths[key])
    calib = dict(data=DIGITS / "digits_calib.npz") if digits else dict(random_calibration=True)
    emit(paths["folded"], work / "cpu", EmitOptions(Target.CPU, int8=Int8.STATIC, input_shapes={"input": shape},
                                                    **calib))
    paths["cpu"], paths["cpu int8"] = work / "cpu" / "model.onnx", work / "cpu" / "model.int8.onnx"
    return paths


def bench_model(name: str, digits: bool, runs: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_variants(name, digits, Path(tmp))
        shape = _shape(name, digits)
        options = BenchOptions(runs=runs, input_shapes={"input": shape},
                               data=DIGITS / "digits_test.npz" if digits else None)
        results = run_benchmark([str(paths[v]) for v in VARIANTS], options)
    base_macs = results[0].macs
    rows = []
    for variant, r in zip(VARIANTS, results):
        macs = r.macs if r.macs else base_macs
        row = {"model": f"{name} (digits)" if digits else name, "variant": variant, "input": "x".join(map(str, shape)),
               "error": r.error, "file_mb": r.file_mb, "macs": macs}
        if r.latency is not None:
            row.update(p50_ms=r.latency.p50_ms, speedup=r.speedup.ratio, speedup_low=r.speedup.low,
                       speedup_high=r.speedup.high,
                       efficiency=r.speedup.ratio / (base_macs / macs) if base_macs and macs else None,
                       accuracy=r.accuracy)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]], runs: int) -> str:
    lines = ["# Benchmark suite: the whole pipeline on every model", "",
             f"Command: `python -m benchmarks.bench_suite --runs {runs}` (`make bench`)  ", f"Machine: {machine()}",
             "", "ORT CPU, batch 1, 1 thread, interleaved, all graph optimizations on. Speedup vs *original* with a "
             "bootstrap 95% interval; efficiency = speedup / MACs reduction.", "",
             "| model | input | variant | size MB | MACs | p50 ms | speedup (95% CI) | efficiency | top-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("p50_ms") is None:
            lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | failed: {r['error']} ||||||")
            continue
        eff = "" if r.get("efficiency") is None else f"{r['efficiency']:.2f}"
        acc = "" if r.get("accuracy") is None else f"{r['accuracy']:.2%}"
        lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | {r['file_mb']:.2f} | {r['macs'] / 1e6:.1f}M | "
                     f"{r['p50_ms']:.3f} | {r['speedup']:.2f} ({r['speedup_low']:.2f}–{r['speedup_high']:.2f}) | "
                     f"{eff} | {acc} |")
    lines += ["", "## Medians over models", "", "| variant | speedup | efficiency | size vs original |", "|---|---|---|---|"]
    for v in VARIANTS[1:]:
        sub = [r for r in rows if r["variant"] == v and r.get("speedup")]
        orig = {r["model"]: r["file_mb"] for r in rows if r["variant"] == "original"}
        if sub:
            lines.append(f"| {v} | {statistics.median(r['speedup'] for r in sub):.2f} | "
                         f"{statistics.median(r['efficiency'] for r in sub if r['efficiency']):.2f} | "
                         f"{statistics.median(r['file_mb'] / orig[r['model']] for r in sub):.0%} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.8 / (len(VARIANTS) - 1)
    for i, v in enumerate(VARIANTS[1:]):
        vals = [next((r.get("speedup") or 0 for r in rows if r["model"] == m and r["variant"] == v), 0) for m in models]
        ax.bar([j + i * width for j in range(len(models))], vals, width, label=v)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speedup vs original (p50)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", default=",".join(list(ZOO) + [f"digits:{m}" for m in DIGITS_MODELS]))
    args = ap.parse_args(argv)
    rows = []
    for item in args.models.split(","):
        digits = item.startswith("digits:")
        name = item.split(":", 1)[-1]
        try:
            rows += bench_model(name, digits, args.runs)
        except Exception as e:  # one model never stops the suite: record it
            rows += [{"model": name, "variant": v, "input": "", "error": f"{type(e).__name__}: {str(e)[:150]}",
                      "file_mb": None, "macs": None} for v in VARIANTS]
        print(f"{item}: " + ", ".join(f"{r['variant']} {r.get('speedup') or 0:.2f}x" for r in rows[-len(VARIANTS):]),
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    (args.out / "suite.md").write_text(markdown(rows, args.runs))
    plot(rows, args.out / "suite.png")
    print(f"wrote {args.out / 'suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
