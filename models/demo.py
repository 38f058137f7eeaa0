"""Side-by-side summary of an original and a rewritten digits model: size, nodes, MACs, test accuracy and
output agreement on the committed test split (ONNX Runtime, graph optimizations off).

Usage: python -m models.demo ORIGINAL.onnx REWRITTEN.onnx [--data models/digits/digits_test.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import onnxprune
from onnxprune.verify import InputSpec, make_session

DEFAULT_DATA = Path(__file__).parent / "digits" / "digits_test.npz"


def evaluate(path: Path, x: np.ndarray) -> np.ndarray:
    sess = make_session(str(path))
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("original", type=Path)
    ap.add_argument("rewritten", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    data = np.load(args.data)
    x, labels = data["input"], data["labels"]
    spec = InputSpec({"input": (1,) + x.shape[1:]})
    table = Table(title=f"{args.original.name} -> {args.rewritten.name}  ({len(labels)} test digits)")
    for col in ("model", "size", "nodes", "BatchNorm", "params", "MACs", "top-1"):
        table.add_column(col, justify="right" if col != "model" else "left")
    logits = {}
    for label, path in (("original", args.original), ("rewritten", args.rewritten)):
        model = onnxprune.load(path)
        summary = onnxprune.inspect(model, spec)
        logits[label] = evaluate(path, x)
        acc = float((logits[label].argmax(1) == labels).mean())
        table.add_row(label, f"{path.stat().st_size / 1e6:.2f} MB", str(len(model.graph.node)),
                      str(summary.ops.get("BatchNormalization", 0)), f"{summary.params:,}", f"{summary.flops:,}",
                      f"{acc:.2%}")
    console = Console()
    console.print(table)
    diff = np.abs(logits["original"].astype(np.float64) - logits["rewritten"]).max()
    agree = float((logits["original"].argmax(1) == logits["rewritten"].argmax(1)).mean())
    console.print(f"outputs on the test split: max abs diff {diff:.3g} (max |logit| "
                  f"{np.abs(logits['original']).max():.3g}), top-1 agreement {agree:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
