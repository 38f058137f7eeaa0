"""``onnxprune compress MODEL -o OUT.onnxz`` and ``onnxprune decompress IN.onnxz -o MODEL.onnx``."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.api import save
from onnxprune.cli.common import (
    add_data_args,
    cli_text,
    console,
    figure,
    guard_paths,
    human,
    print_json,
    step_from_args,
)
from onnxprune.compression.kmeans import Init
from onnxprune.compression.pipeline import CompressResult, decompress
from onnxprune.compression.runnable import runnable
from onnxprune.io import ensure_output_path
from onnxprune.metrics import METRIC_HELP
from onnxprune.paths import read_regular_file
from onnxprune.recover import Recover
from onnxprune.steps.base import StepContext
from onnxprune.steps.compress import CompressStep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="Deep Compression: prune connections, share weights, Huffman-code",
                       description="Writes a versioned, checksummed .onnxz container (decompress restores an "
                                   "ONNX model bit for bit) and optionally an ONNX file ONNX Runtime runs directly "
                                   "(--runnable). BatchNorm is folded first.")
    p.add_argument("model")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .onnxz container")
    g = p.add_argument_group("connection pruning (default: none)")
    g.add_argument("--quality", type=float, help="zero |w| < Q x std(w) in each layer (Han et al. 2015)")
    g.add_argument("--sparsity", type=float, help="zero this fraction of each layer's weights, smallest first")
    g.add_argument("--global", dest="global_sparsity", action="store_true",
                   help="with --sparsity: one magnitude threshold over all layers")
    g.add_argument("--sparsity-for", action="append", default=[], metavar="GLOB=S",
                   help="sparsity for layers whose name matches GLOB (first match wins; repeatable)")
    g.add_argument("--tolerance", type=float,
                   help="per-layer sparsity from a sensitivity run on --data: the largest whose metric loss <= T")
    g.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="global budget on --eval-data (else --data): while the metric drops by more than POINTS "
                        "(percentage points), every layer's sparsity is scaled back (bisection on one factor). "
                        "Default with --data and no other pruning option: --tolerance 0.01 --max-drop 1")
    g.add_argument("--include", action="append", default=[], metavar="GLOB", help="prune only these layers")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="never prune these layers")
    s = p.add_argument_group("weight sharing")
    s.add_argument("--conv-bits", type=int, default=8, help="codebook bits of conv layers (default 8)")
    s.add_argument("--fc-bits", type=int, default=5, help="codebook bits of Gemm/MatMul layers (default 5)")
    s.add_argument("--conv-index-bits", type=int, default=8, help="sparse index gap bits, conv (default 8)")
    s.add_argument("--fc-index-bits", type=int, default=5, help="sparse index gap bits, Gemm/MatMul (default 5)")
    s.add_argument("--init", choices=[i.value for i in Init], default="linear", help="k-means initialization")
    s.add_argument("--no-sharing", action="store_true", help="prune and code the index only; keep float values")
    add_data_args(p, "measure accuracy/agreement before and after (and drive --tolerance)", limit=512)
    p.add_argument("--eval-data", type=Path, help="data the report measures accuracy/agreement on (default: --data; "
                                                  "same forms and preprocessing); keep it apart from the calibration "
                                                  "data for an honest figure")
    p.add_argument("--metric", metavar="METRIC", help="metric for --tolerance and the report: " + METRIC_HELP)
    p.add_argument("--runnable", type=Path, metavar="FILE.onnx",
                   help="also write an ONNX file ORT runs directly (index tensors + codebooks, sparse tensors)")
    p.add_argument("--recover", choices=[r.value for r in Recover],
                   help="training-free recovery on --data, layer by layer (default: lsq when --data is given): lsq "
                        "refits each layer's surviving weights and bias to the original's outputs, then shares "
                        "them; bias only moves each layer's mean output back")
    t = p.add_argument_group("retraining (Deep Compression's; needs PyTorch, see onnxprune finetune)")
    t.add_argument("--finetune-epochs", type=float,
                   help="retrain on --finetune-data: half the epochs with pruned connections held at zero, half "
                        "fine-tuning the shared codebooks (indices fixed); distils --teacher (default: the input)")
    t.add_argument("--finetune-data", type=Path, help="training data for --finetune-epochs (same forms as --data)")
    t.add_argument("--teacher", type=Path, help="teacher for --finetune-epochs (default: the input model)")
    t.add_argument("--prune-steps", type=int, default=1, metavar="K",
                   help="with --finetune-epochs: reach the sparsity in K pruning steps on a cubic schedule, each "
                        "retrained on 1/K of the masked half (the paper's iterative pruning; default 1)")
    p.add_argument("--no-fold", action="store_true", help="do not fold BatchNorm first")
    p.add_argument("--report", type=Path, help="write the per-layer report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)

    d = sub.add_parser("decompress", help="restore an ONNX model from an .onnxz container",
                       description="Checks the container's checksum, decodes every weight and writes the model.")
    d.add_argument("container")
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("--runnable", action="store_true",
                   help="write the small runnable form (index tensors + codebooks) instead of dense weights")
    d.set_defaults(run=run_decompress)


def run(args: argparse.Namespace) -> int:
    result = step_from_args(CompressStep, args).run(StepContext(Path(args.model), args.output, args.report))
    if args.json:
        print_json(result.report)
        return 0
    _print(result.details, result.report)
    console.print(f"wrote {args.output}" + (f", {args.runnable}" if args.runnable else ""))
    return 0


def _print(result: CompressResult, report: dict[str, object]) -> None:
    from rich.table import Table

    table = Table(title="Deep Compression", show_lines=False)
    fits = {f.layer: f for f in result.fits}
    columns = ("layer", "kind", "weights", "kept", "bits", "before", "after", "ratio") + \
        (("out err",) if fits else ())
    for col in columns:
        table.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for r in result.layers:
        row = [r.layer, r.kind, human(r.weights), f"{r.kept:.1%}", str(r.bits) if r.bits else "float",
               f"{r.bytes_before / 1024:.1f} KiB", f"{r.bytes_after / 1024:.1f} KiB",
               f"{r.bytes_before / max(r.bytes_after, 1):.1f}x"]
        if fits:
            f = fits.get(r.layer)
            row.append("" if f is None else f.method if f.error_before is None
                       else f"{f.error_before:.2f}→{f.error_after:.2f}")
        table.add_row(*row)
    console.print(table)
    if fits:
        console.print("out err: relative L2 error of each layer's output vs the original's on --data, "
                      "as pruned → refit and shared")
    console.print(f"model {result.source_bytes / 1e6:.3f} MB -> container {len(result.container) / 1e6:.3f} MB "
                  f"({result.ratio:.1f}x; coded weights {result.weights_ratio():.1f}x)"
                  + (f"; runnable {report['runnable_bytes'] / 1e6:.3f} MB" if report["runnable_bytes"] else ""))
    for note in report["notes"]:  # type: ignore[union-attr]
        console.print(f"note: {cli_text(note)}", markup=False)
    q = report["quality"]
    if q:
        shown = ("accuracy", "agreement", "line-accuracy", "cer", "line-agreement", "cosine")   # CTC heads too
        keys = [k for k in shown if k in q["compressed"]]  # type: ignore[index]
        console.print(f"on {'--eval-data' if report['eval_data'] else '--data'}: " + ", ".join(f"{k} {figure(k, q['original'][k])} -> {figure(k, q['compressed'][k])}"  # type: ignore[index]
                                              for k in keys))


def run_decompress(args: argparse.Namespace) -> int:
    path = Path(args.container)
    guard_paths(args, inputs=("container",), files=("output",))
    data = read_regular_file(path, "onnxprune container")
    ensure_output_path(args.output, path)
    model = runnable(data, str(path)) if args.runnable else decompress(data, str(path))
    save(model, args.output, source=str(path))
    console.print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.3f} MB)")
    return 0
