"""The hard benchmark: what onnxprune does to accuracy on the two models of ``models/hard`` (tasks that do not
saturate), every figure on the held-out test split, every data-driven step calibrated on the separate
calibration split.

Models: ``glyphs`` (47-class rendered glyphs, GlyphResNet, top-1) and ``textline`` (rendered text lines,
conv + attention + CTC recognizer, exact-line accuracy and character error rate). Variants, each run through
the CLI as a user would:

- original, ``fold``;
- ``prune --target-flops 0.7`` / ``0.5`` with ``--round-to 8``: no recovery, ``--recover bias``,
  ``--recover lsq``; and ``sensitivity`` plans at the same MACs + lsq;
- ``emit --target cpu --int8`` one shot, and with ``--max-drop 1`` (accuracy-driven, on the calibration split
  as evaluation data: the test split stays unseen);
- ``compress --sparsity 0.8`` with refit, and ``compress --data`` alone (the default with data: per-layer
  sparsity from sensitivity, ``--tolerance 0.01 --max-drop 1`` on the calibration split).

Latency: every variant of a model is then timed interleaved with the original in one ``bench`` run (ONNX
Runtime CPU, 1 thread, batch 1, all graph optimizations; median of ``--runs`` rounds), with the speedup's
bootstrap interval.

Usage: python -m benchmarks.bench_hard [--models glyphs,textline] [--variants ...] [--out benchmarks/results]
Writes hard.json and hard.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.common import machine

HARD = Path(__file__).resolve().parents[1] / "models" / "hard"
MODELS = ("glyphs", "textline")
VARIANTS = ("original", "fold", "prune-0.7", "prune-0.7-bias", "prune-0.7-lsq", "prune-0.5-lsq",
            "sensitivity-0.7-lsq", "int8", "int8-max-drop-1", "compress-0.8", "compress-default")


def score(model_path: Path, name: str) -> dict[str, float]:
    """Test-split quality of an ONNX file (ORT, all optimizations on: as deployed)."""
    from onnxprune.metrics import sequence_metrics

    data = np.load(HARD / f"{name}_test.npz")
    x, labels = data["input"].astype(np.float32), data["labels"]
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {feed: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    if out.ndim == 2:
        return {"accuracy": float((out.argmax(1) == labels).mean())}
    m = sequence_metrics(out, out, labels)
    return {"line-accuracy": m["line-accuracy"], "cer": m["cer"]}


def cli(*argv: str) -> None:
    from onnxprune.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv, "-q"])
    if code != 0:
        raise RuntimeError(f"onnxprune {' '.join(argv)} exited {code}")


def variant(name: str, which: str, tmp: Path) -> Path:
    src, calib = HARD / f"{name}.onnx", str(HARD / f"{name}_calib.npz")
    shape = "input=1x1x32x128" if name == "textline" else "input=1x1x32x32"
    out = tmp / f"{which}.onnx"
    if which == "original":
        return src
    if which == "fold":
        cli("fold", str(src), "-o", str(out))
    elif which.startswith("prune-"):
        parts = which.split("-")
        recover = parts[2] if len(parts) > 2 else None
        cli("prune", str(src), "-o", str(out), "--target-flops", parts[1], "--round-to", "8", "--input-shape", shape,
            *(["--recover", recover, "--data", calib] if recover else []))
    elif which.startswith("sensitivity-"):
        target = which.split("-")[1]
        cli("sensitivity", str(src), "--data", calib, "-o", str(tmp / "sens"), "--ratios", "0.2,0.4,0.6",
            "--target-flops", target, "--input-shape", shape, "--force")
        cli("prune", str(src), "-o", str(out), "--sensitivity", str(tmp / "sens"), "--round-to", "8",
            "--input-shape", shape, "--recover", "lsq", "--data", calib)
    elif which.startswith("int8"):
        extra = ["--max-drop", "1", "--eval-data", calib] if which.endswith("max-drop-1") else []
        cli("emit", str(src), "--target", "cpu", "-o", str(tmp / which), "--int8", "--data", calib, "--force",
            *extra)
        return tmp / which / "model.int8.onnx"
    elif which.startswith("compress-"):
        how = ["--sparsity", "0.8"] if which == "compress-0.8" else []      # default: --tolerance 0.01 --max-drop 1
        cli("compress", str(src), "-o", str(tmp / f"{which}.onnxz"), *how, "--data", calib)
        cli("decompress", str(tmp / f"{which}.onnxz"), "-o", str(out))
    else:
        raise ValueError(which)
    return out


def latency(name: str, timed: list[tuple[dict[str, object], Path]], runs: int) -> None:
    """p50 latency and speedup over the original for every variant, timed interleaved in one run."""
    from onnxprune.benchmark import BenchOptions, run_benchmark

    shape = (1, 1, 32, 128) if name == "textline" else (1, 1, 32, 32)
    original = HARD / f"{name}.onnx"
    paths = [str(original)] + [str(p) for _, p in timed]
    results = run_benchmark(paths, BenchOptions(runs=runs, threads=(1,), input_shapes={"input": shape}))
    base = results[0]
    for (row, _), r in zip(timed, results[1:], strict=True):
        if r.latency is None:
            row["latency_error"] = r.error
            continue
        row["p50_ms"] = round(r.latency.p50_ms, 3)
        if r.speedup is not None:
            row["speedup"] = [round(r.speedup.ratio, 3), round(r.speedup.low, 3), round(r.speedup.high, 3)]
    print(json.dumps({"model": name, "original_p50_ms": base.latency.p50_ms if base.latency else None}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--runs", type=int, default=60, help="interleaved latency rounds per model")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in args.models.split(","):
            timed: list[tuple[dict[str, object], Path]] = []
            for which in args.variants.split(","):
                tmp = Path(tmp_name) / name
                tmp.mkdir(exist_ok=True)
                start = time.perf_counter()
                try:
                    path = variant(name, which, tmp)
                    row = {"model": name, "variant": which, **score(path, name),
                           "mb": round(path.stat().st_size / 1e6, 3)}
                    if which.startswith("compress-"):
                        row["onnxz_mb"] = round((tmp / f"{which}.onnxz").stat().st_size / 1e6, 3)
                    if which.startswith("int8"):
                        manifest = json.loads((tmp / which / "manifest.json").read_text())
                        row["kept_float"] = len((manifest.get("int8") or {}).get("kept_float", []))
                    timed.append((row, path))
                except RuntimeError as e:
                    row = {"model": name, "variant": which, "error": str(e)}
                row["seconds"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
            latency(name, timed, args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hard.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    lines = ["# The hard benchmark: accuracy on held-out test splits (models/hard)", "",
             "Command: `python -m benchmarks.bench_hard`  ", f"Machine: {machine()}", "",
             "Every figure on the test split (glyphs: 1000 images, top-1; textline: 600 lines, exact-line accuracy "
             "and CER); calibration, sensitivity and the int8 search on the 256-sample calibration split.", "",
             f"Latency: ONNX Runtime CPU, 1 thread, batch 1, median of {args.runs} rounds interleaved with the "
             "original in one run; speedup = median(original) / median(variant) [95% bootstrap interval]. "
             "Decompressed models are dense: the .onnxz saves storage, not time.", "",
             "| model | variant | accuracy / line accuracy | CER | file MB | .onnxz MB | float nodes | p50 ms | "
             "speedup | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error']} | | | | | | | {r['seconds']} |")
            continue
        acc = r.get("accuracy", r.get("line-accuracy"))
        cer = f"{r['cer']:.2%}" if "cer" in r else ""
        sp = r.get("speedup")
        speed = f"{sp[0]:.2f}× [{sp[1]:.2f}–{sp[2]:.2f}]" if sp else ""
        lines.append(f"| {r['model']} | {r['variant']} | {acc:.2%} | {cer} | {r['mb']} | {r.get('onnxz_mb', '')} | "
                     f"{r.get('kept_float', '')} | {r.get('p50_ms', '')} | {speed} | {r['seconds']} |")
    (args.out / "hard.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'hard.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
