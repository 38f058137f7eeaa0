"""Speed of the data-driven steps: wall time of each case, per stage, on this machine.

Cases (each a fresh measurement in this process, one after another):

- ``lsq-resnet56``: ``prune --ratio 0.3 --round-to 8 --recover lsq`` on the digits ResNet-56 with its 128
  calibration digits (32x32);
- ``lsq-crnn``: the same on the zoo's CRNN (conv backbone, BiLSTM, CTC-style head) at 32x320 with 256 generated
  lines (random normal pixels: timing only) — the shape of a text-line recognizer;
- ``lsq-textline``: the same on the trained text-line recognizer of ``models/hard`` (conv backbone, attention
  neck, CTC head; 1.26 M parameters) with its 256 calibration lines (32x128);
- ``lsq-textline-320``: the same recognizer on 256 generated lines of 32x320 (timing only: the input size of
  production recognizers);
- ``lsq-resnet50``: the same on ResNet-50 at 224x224 with 256 generated images (timing only);
- ``compress-readme``: README's compress example, ``compress vgg16_bn --tolerance 0.005 --metric kl --data
  digits_calib`` (per-layer sensitivity with refit, then refit and share).

Usage: python -m benchmarks.bench_speed [--cases a,b] [--out benchmarks/results]
Writes speed.json and speed.md; --out elsewhere (and PYTHONPATH at another checkout) measures another version.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DIGITS, machine

CASES = ("lsq-resnet56", "lsq-crnn", "lsq-textline", "lsq-textline-320", "lsq-resnet50", "compress-readme")
HARD = Path(__file__).resolve().parents[1] / "models" / "hard"


def _timing():
    """Per-stage times when this onnxprune records them (older versions, measured for "before", do not)."""
    try:
        from onnxprune.progress import timing
    except ImportError:
        import contextlib

        return contextlib.nullcontext([])
    return timing()


def _generated(model, shape: tuple[int, ...], n: int):
    from onnxprune.data import Dataset
    from onnxprune.verify import graph_inputs

    rng = np.random.default_rng(0)
    name = graph_inputs(model)[0].name
    return Dataset({name: rng.standard_normal((n, *shape[1:])).astype(np.float32)}, None)


def _lsq(model_path: Path, data_factory, spec_shape: tuple[int, ...]) -> dict[str, object]:
    import onnxprune
    from onnxprune.plan import PlanOptions
    from onnxprune.pruning import prune
    from onnxprune.recover import Recover
    from onnxprune.verify import InputSpec, graph_inputs

    model = onnxprune.load(model_path)
    data = data_factory(model)
    spec = InputSpec({graph_inputs(model)[0].name: spec_shape})
    start = time.perf_counter()
    with _timing() as stages:
        result = prune(model, PlanOptions(ratio=0.3, round_to=8), spec=spec, recover_with=Recover.LSQ, data=data)
    total = time.perf_counter() - start
    return {"seconds": total, "stages": stages, "samples": len(data),
            "macs_kept": result.report.flops_after / result.report.flops_before}


def run_case(case: str) -> dict[str, object]:
    from models.zoo_cache import zoo_model

    if case == "lsq-resnet56":
        from onnxprune.data import load_data

        return _lsq(DIGITS / "resnet56.onnx", lambda m: load_data(DIGITS / "digits_calib.npz", m),
                    (1, 3, 32, 32))
    if case == "lsq-crnn":
        return _lsq(zoo_model("crnn", "legacy"), lambda m: _generated(m, (1, 1, 32, 320), 256), (1, 1, 32, 320))
    if case == "lsq-textline":
        from onnxprune.data import load_data

        return _lsq(HARD / "textline.onnx", lambda m: load_data(HARD / "textline_calib.npz", m), (1, 1, 32, 128))
    if case == "lsq-textline-320":
        return _lsq(HARD / "textline.onnx", lambda m: _generated(m, (1, 1, 32, 320), 256), (1, 1, 32, 320))
    if case == "lsq-resnet50":
        return _lsq(zoo_model("resnet50", "legacy"), lambda m: _generated(m, (1, 3, 224, 224), 256),
                    (1, 3, 224, 224))
    if case == "compress-readme":
        from onnxprune.passes.prune_connections import ConnectionPruning

        import onnxprune
        from onnxprune.compression.layer_sparsity import (
            DEFAULT_GRID,
            layer_curves,
            sparsity_for,
        )
        from onnxprune.compression.pipeline import CompressOptions, compress
        from onnxprune.data import load_data
        from onnxprune.metrics import Metric
        from onnxprune.recover import Recover

        model = onnxprune.load(DIGITS / "vgg16_bn.onnx")
        data = load_data(DIGITS / "digits_calib.npz", model, limit=512)
        start = time.perf_counter()
        with _timing() as stages:
            _, curves = layer_curves(onnxprune.fold(model).model, data, Metric.KL, DEFAULT_GRID, Recover.LSQ)
            result = compress(model, CompressOptions(ConnectionPruning(sparsity_for=tuple(sparsity_for(curves, 0.005))),
                                                     recover=Recover.LSQ), data)
        return {"seconds": time.perf_counter() - start, "stages": stages, "samples": len(data),
                "ratio": result.ratio}
    raise ValueError(case)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    rows = {}
    for case in args.cases.split(","):
        rows[case] = run_case(case)
        print(json.dumps({"case": case, "seconds": round(rows[case]["seconds"], 2)}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({"machine": machine(), "cases": rows}, indent=2) + "\n")
    lines = ["# onnxprune speed of the data-driven steps", "", "Command: `python -m benchmarks.bench_speed`  ",
             f"Machine: {machine()}", "", "| case | samples | wall s | stages (s) |", "|---|---:|---:|---|"]
    for case, r in rows.items():
        stages = "; ".join(f"{s['stage']} {s['seconds']:.1f}" for s in r["stages"])
        lines.append(f"| {case} | {r['samples']} | {r['seconds']:.1f} | {stages} |")
    (args.out / "speed.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
