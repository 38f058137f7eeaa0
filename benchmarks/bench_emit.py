"""What `emit` produces for the digits-trained models: size and test accuracy per artifact.

For each digits model: cpu (float32, ORT-optimized portable), cpu --int8 static (calibrated on 128 training
digits), cuda fp16 (run on ONNX Runtime CPU here: no GPU), mobile --int8 (.ort). Accuracy on the 450 test
digits, as recorded in each manifest.

Usage: python -m benchmarks.bench_emit [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import DIGITS, machine
from onnxprune.emission import EmitOptions, Int8, Target, emit

MODELS = ("studentnet", "vgg16_bn", "resnet56")
CALIB, TEST = DIGITS / "digits_calib.npz", DIGITS / "digits_test.npz"
VARIANTS = {
    "cpu": EmitOptions(Target.CPU, data=CALIB, eval_data=TEST),
    "cpu int8": EmitOptions(Target.CPU, int8=Int8.STATIC, data=CALIB, eval_data=TEST),
    "cuda fp16": EmitOptions(Target.CUDA, data=CALIB, eval_data=TEST),
    "mobile int8": EmitOptions(Target.MOBILE, int8=Int8.STATIC, data=CALIB, eval_data=TEST,
                               input_shapes={"input": (1, 3, 32, 32)}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            src = DIGITS / f"{name}.onnx"
            for variant, options in VARIANTS.items():
                result = emit(src, Path(tmp) / f"{name}-{variant.replace(' ', '-')}", options)
                for f in result.manifest.files:
                    on_test = [a for a in f.agreement if a.samples]
                    if on_test:
                        a = on_test[0]
                        rows.append({"model": name, "variant": variant, "file": f.name, "bytes": f.bytes,
                                     "source_bytes": src.stat().st_size, "accuracy": a.accuracy,
                                     "source_accuracy": a.source_accuracy, "top1_agreement": a.top1_agreement})
                print(f"{name} {variant}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emit_digits.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# `onnxprune emit` on the digits-trained models", "",
             "Command: `python -m benchmarks.bench_emit`  ", f"Machine: {machine()}", "",
             "Top-1 on the 450 test digits (int8 calibrated on 128 training digits), each artifact run by ONNX "
             "Runtime CPU with all optimizations on (fp16 too: no GPU here).", "",
             "| model | variant | file | size | vs source file | top-1 | source top-1 | drop (points) | agrees |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['file']} | {r['bytes'] / 1e6:.2f} MB | "
                     f"{r['bytes'] / r['source_bytes']:.0%} | {r['accuracy']:.2%} | {r['source_accuracy']:.2%} | "
                     f"{100 * (r['source_accuracy'] - r['accuracy']):+.1f} | {r['top1_agreement']:.1%} |")
    (args.out / "emit_digits.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'emit_digits.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
