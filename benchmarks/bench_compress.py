"""Deep Compression without retraining on the digits models, and compress/decompress speed on ResNet-50.

Ratio vs top-1 (450 test digits, ONNX Runtime) for each digits model, every row measured on the *decompressed*
model (bit-identical to what ``onnxprune decompress`` returns); ratio = the original ``.onnx`` file / the
``.onnxz`` container. Calibration (refit, sensitivity): 128 training digits, never the test split.

- ``share``: weight sharing only (8-bit conv, 5-bit fc), no pruning;
- ``uniform S``: S of every layer's weights pruned, by magnitude, with ``--recover none | bias | lsq``;
- ``global S``: one magnitude threshold over all layers (lsq);
- ``uniform S, conv 6 bit``: smaller conv codebooks (lsq);
- ``sensitivity T``: per-layer sparsity from a refit-aware sensitivity run (``--tolerance T --metric kl``, lsq);
- ``filters -30% + ...``: ``prune --target-flops 0.7 --recover lsq`` (L1 filter pruning) first, then compress;
  the ratio is still against the original file.

Speed: ResNet-50 (torchvision layout, 25.6 M parameters, random weights, exported once): ``compress --sparsity
0.9`` (no data), ``decompress``, and the runnable form; wall-clock seconds on this machine, one run each.

Usage: python -m benchmarks.bench_compress [--out benchmarks/results] [--models studentnet,vgg16_bn,resnet56]
       [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnxprune.passes import ConnectionPruning

import onnxprune
from benchmarks.common import DIGITS, accuracy, digits_test, machine
from onnxprune.compression import CompressOptions, Sharing, compress, decompress
from onnxprune.compression.layer_sparsity import (
    DEFAULT_GRID,
    layer_curves,
    sparsity_for,
    weighted_sparsity,
)
from onnxprune.compression.runnable import runnable
from onnxprune.data import load_data
from onnxprune.metrics import Metric
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.recover import Recover
from onnxprune.verify import InputSpec

MODELS = ("studentnet", "vgg16_bn", "resnet56")
UNIFORM = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93)
TOLERANCES = (0.005, 0.01, 0.03)


def configs(model: onnx.ModelProto, calib) -> list[tuple[str, onnx.ModelProto, CompressOptions]]:
    """(label, model to compress, options) for every row; the sensitivity rows measure curves once."""
    rows: list[tuple[str, onnx.ModelProto, CompressOptions]] = [
        ("share", model, CompressOptions(ConnectionPruning(), Sharing(), Recover.NONE))]
    for s in UNIFORM:
        for recover in Recover:
            if recover is Recover.BIAS and s not in (0.7, 0.9):
                continue
            rows.append((f"uniform {s}", model, CompressOptions(ConnectionPruning(sparsity=s), Sharing(), recover)))
    for s in (0.7, 0.85, 0.9):
        rows.append((f"global {s}", model,
                     CompressOptions(ConnectionPruning(sparsity=s, global_sparsity=True), Sharing(), Recover.LSQ)))
    for s in (0.85, 0.9):
        rows.append((f"uniform {s}, conv 6 bit", model,
                     CompressOptions(ConnectionPruning(sparsity=s), Sharing(conv_bits=6), Recover.LSQ)))
    folded = onnxprune.fold(model).model
    _, curves = layer_curves(folded, calib, Metric.KL, DEFAULT_GRID, Recover.LSQ)
    for t in TOLERANCES:
        chosen = sparsity_for(curves, t)
        label = f"sensitivity {t} ({weighted_sparsity(curves, chosen):.0%} pruned)"
        rows.append((label, model, CompressOptions(ConnectionPruning(sparsity_for=chosen), Sharing(), Recover.LSQ)))
    filtered = prune(model, PlanOptions(target_flops=0.7), spec=InputSpec({"input": (1, 3, 32, 32)}),
                     recover_with=Recover.LSQ, data=calib).model
    for s in (0.7, 0.85):
        rows.append((f"filters -30% + uniform {s}", filtered,
                     CompressOptions(ConnectionPruning(sparsity=s), Sharing(), Recover.LSQ)))
    return rows


def digits_rows(name: str) -> list[dict[str, object]]:
    model = onnx.load(DIGITS / f"{name}.onnx")
    source = (DIGITS / f"{name}.onnx").stat().st_size
    calib = load_data(DIGITS / "digits_calib.npz", model)
    x, labels = digits_test()
    original = accuracy(model, x, labels)
    out = []
    for label, base, options in configs(model, calib):
        start = time.perf_counter()
        result = compress(base, options, calib if options.recover is not Recover.NONE else None)
        seconds = time.perf_counter() - start
        restored = decompress(result.container)
        kept = sum(r.nonzero for r in result.layers) / sum(r.weights for r in result.layers)
        row = {"model": name, "config": label, "recover": options.recover.value, "source_bytes": source,
               "container_bytes": len(result.container), "ratio": source / len(result.container),
               "weights_kept": kept, "top1_original": original, "top1": accuracy(restored, x, labels),
               "seconds": seconds}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def speed() -> dict[str, object]:
    from models.zoo_cache import zoo_model

    path = zoo_model("resnet50", "legacy")
    model = onnx.load(path)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    start = time.perf_counter()
    result = compress(model, CompressOptions(ConnectionPruning(sparsity=0.9), Sharing(), Recover.NONE))
    compress_s = time.perf_counter() - start
    start = time.perf_counter()
    decompress(result.container)
    decompress_s = time.perf_counter() - start
    start = time.perf_counter()
    small = runnable(result.container)
    runnable_s = time.perf_counter() - start
    row = {"model": "resnet50", "params": params, "source_bytes": path.stat().st_size,
           "container_bytes": len(result.container), "runnable_bytes": small.ByteSize(),
           "compress_seconds": compress_s, "decompress_seconds": decompress_s, "runnable_seconds": runnable_s}
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, object]], speed_row: dict[str, object] | None) -> str:
    lines = ["# Deep Compression without retraining (digits models)", "",
             "Command: `python -m benchmarks.bench_compress`  ", f"Machine: {machine()}  ",
             "Top-1 on the 450 test digits of the decompressed model; ratio = original .onnx / .onnxz container; "
             "8-bit conv / 5-bit fc codebooks unless stated; calibration: 128 training digits.", ""]
    for name in dict.fromkeys(r["model"] for r in rows):
        part = [r for r in rows if r["model"] == name]
        lines += [f"## {name} ({part[0]['source_bytes'] / 1e6:.2f} MB, top-1 {part[0]['top1_original']:.2%})", "",
                  "| config | recover | weights kept | container | ratio | top-1 | Δ pts | compress s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in part:
            lines.append(f"| {r['config']} | {r['recover']} | {r['weights_kept']:.1%} | "
                         f"{r['container_bytes'] / 1e3:.0f} kB | {r['ratio']:.1f}x | {r['top1']:.2%} | "
                         f"{100 * (r['top1'] - r['top1_original']):+.2f} | {r['seconds']:.1f} |")
        lines.append("")
    if speed_row:
        s = speed_row
        lines += ["## Speed: ResNet-50 (random weights), `--sparsity 0.9`, no data", "",
                  f"{s['params'] / 1e6:.1f} M parameters, {s['source_bytes'] / 1e6:.1f} MB -> container "
                  f"{s['container_bytes'] / 1e6:.2f} MB ({s['source_bytes'] / s['container_bytes']:.1f}x), runnable "
                  f"{s['runnable_bytes'] / 1e6:.1f} MB. compress {s['compress_seconds']:.1f} s, decompress "
                  f"{s['decompress_seconds']:.2f} s, runnable form {s['runnable_seconds']:.2f} s (one run each).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    rows = [row for name in args.models.split(",") for row in digits_rows(name)]
    speed_row = None if args.skip_speed else speed()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compress.json").write_text(json.dumps({"digits": rows, "speed": speed_row}, indent=2) + "\n")
    (args.out / "compress.md").write_text(markdown(rows, speed_row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
