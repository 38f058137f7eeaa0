"""Side-by-side summary of a digits model and its rewritten variants: size, nodes, MACs, test accuracy and
agreement with the original on the committed test split (ONNX Runtime, graph optimizations off).

Usage: python -m models.demo ORIGINAL.onnx VARIANT.onnx [VARIANT.onnx ...] [--data models/digits/digits_test.npz]
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
    ap.add_argument("variants", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    data = np.load(args.data)
    x, labels = data["input"], data["labels"]
    spec = InputSpec({"input": (1,) + x.shape[1:]})
    table = Table(title=f"{args.original.name} on {len(labels)} test digits")
    for col in ("model", "size", "nodes", "BN", "params", "MACs", "top-1", "agrees", "max |diff|"):
        table.add_column(col, justify="right" if col != "model" else "left")
    reference = evaluate(args.original, x)
    base = None
    for path in (args.original, *args.variants):
        model = onnxprune.load(path)
        summary = onnxprune.inspect(model, spec)
        logits = evaluate(path, x)
        acc = float((logits.argmax(1) == labels).mean())
        base = base or summary
        agree = float((logits.argmax(1) == reference.argmax(1)).mean())
        diff = float(np.abs(logits.astype(np.float64) - reference).max())
        table.add_row(path.name, f"{path.stat().st_size / 1e6:.2f} MB", str(len(model.graph.node)),
                      str(summary.ops.get("BatchNormalization", 0)),
                      f"{summary.params:,} ({summary.params / base.params:.0%})",
                      f"{summary.flops / 1e6:.1f}M ({summary.flops / base.flops:.0%})", f"{acc:.2%}", f"{agree:.0%}",
                      f"{diff:.2g}")
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
