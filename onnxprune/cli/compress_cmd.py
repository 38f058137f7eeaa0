"""``onnxprune compress MODEL -o OUT.onnxz`` and ``onnxprune decompress IN.onnxz -o MODEL.onnx``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnx

from onnxprune.api import save
from onnxprune.cli.common import (
    add_data_args,
    console,
    data_from_args,
    figure,
    glob_values,
    guard_paths,
    human,
    image_preprocess,
    load_model,
    print_json,
)
from onnxprune.compress.kmeans import Init
from onnxprune.compress.layer_sparsity import (
    DEFAULT_GRID,
    layer_curves,
    sparsity_for,
    weighted_sparsity,
)
from onnxprune.compress.pipeline import (
    CompressOptions,
    CompressResult,
    Retrainer,
    Sharing,
    compress,
    decompress,
)
from onnxprune.compress.runnable import runnable
from onnxprune.data import load_data
from onnxprune.errors import UsageError
from onnxprune.io import ensure_output_path, write_bytes_atomic, write_text_atomic
from onnxprune.metrics import (
    METRIC_HELP,
    default_metric,
    loss,
    metrics,
    outputs,
    parse_metric,
)
from onnxprune.passes.prune_connections import ConnectionPruning, scaled
from onnxprune.paths import read_regular_file
from onnxprune.progress import stage, timing
from onnxprune.recover import Recover
from onnxprune.signals import import_deferred


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
    if (args.finetune_epochs is None) != (args.finetune_data is None):
        raise UsageError("--finetune-epochs and --finetune-data go together")
    if args.teacher is not None and args.finetune_epochs is None:
        raise UsageError("--teacher is for --finetune-epochs")
    if args.finetune_epochs is not None and args.finetune_epochs <= 0:
        raise UsageError("--finetune-epochs must be positive")
    if args.prune_steps != 1 and args.finetune_epochs is None:
        raise UsageError("--prune-steps is for --finetune-epochs (pruning steps each followed by retraining)")
    guard_paths(args, inputs=("model", "data", "eval_data", "finetune_data", "teacher"),
                files=("output", "runnable", "report"))
    for path in (args.output, args.runnable, args.report):
        if path is not None:
            ensure_output_path(path, args.model)
    model = load_model(args.model)
    data = data_from_args(args, model)
    metric = parse_metric(args.metric)
    per_layer = glob_values("--sparsity-for", args.sparsity_for, "/features*=0.8")
    notes = []
    sharing = Sharing(not args.no_sharing, args.conv_bits, args.fc_bits, args.conv_index_bits, args.fc_index_bits,
                      Init(args.init))
    explicit = args.quality is not None or args.sparsity is not None or args.sparsity_for or args.tolerance is not None
    tolerance, max_drop = args.tolerance, args.max_drop
    if data is not None and not explicit:
        tolerance, max_drop = DEFAULT_TOLERANCE, DEFAULT_MAX_DROP if max_drop is None else max_drop
        notes.append(f"defaults with --data: --tolerance {tolerance} --max-drop {max_drop}")
    if max_drop is not None and (data is None or max_drop < 0):
        raise UsageError("--max-drop needs --data (and POINTS >= 0)" if data is None else
                         f"--max-drop {max_drop}: expected points >= 0")
    with timing() as stages:
        folded_model = model
        recover = Recover(args.recover or ("lsq" if data is not None else "none"))
        if recover is not Recover.NONE and data is None:
            raise UsageError(f"--recover {recover.value} needs calibration data (--data)")
        if tolerance is not None:
            if data is None:
                raise UsageError("--tolerance measures each layer's sensitivity: it needs --data")
            if not args.no_fold:
                import onnxprune

                folded_model = onnxprune.fold(model).model
            metric, curves = layer_curves(folded_model, data, metric, DEFAULT_GRID, recover)
            per_layer = per_layer + sparsity_for(curves, tolerance)
            notes.append(f"sensitivity ({metric.value}, tolerance {tolerance}): {weighted_sparsity(curves, per_layer[-len(curves):]):.1%} of coded weights pruned")
        pruning = ConnectionPruning(args.quality, args.sparsity, args.global_sparsity, per_layer, tuple(args.include),
                                    tuple(args.exclude))
        eval_data = data_from_args(args, model, "eval_data") if args.eval_data is not None else data
        reference = outputs(model, eval_data) if eval_data is not None else None
        chosen_metric = (metric or default_metric(eval_data, reference)) if eval_data is not None else None

        retrainer = _retrainer(args, model) if args.finetune_epochs else None

        def attempt(factor: float):
            start = time.perf_counter()
            result = compress(model, CompressOptions(scaled(pruning, factor), sharing, recover,
                                                     fold=not args.no_fold, prune_steps=args.prune_steps),
                              data, retrainer)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            restored = decompress(result.container, str(args.output))
            decode_seconds = time.perf_counter() - start
            quality = None
            if eval_data is not None:
                quality = {"original": metrics(reference, reference, eval_data.labels),
                           "compressed": metrics(reference, outputs(restored, eval_data), eval_data.labels)}
            return result, quality, seconds, decode_seconds

        result, quality, seconds, decode_seconds = attempt(1.0)
        if max_drop is not None and pruning.active:
            result, quality, seconds, decode_seconds = _back_off(attempt, (result, quality, seconds, decode_seconds),
                                                                 chosen_metric, max_drop, notes)
    write_bytes_atomic(args.output, result.container, args.model)
    runnable_bytes = None
    if args.runnable:
        small = runnable(result.container, str(args.output))
        save(small, args.runnable, source=args.model)
        runnable_bytes = args.runnable.stat().st_size
    report = _report(result, recover, None if args.eval_data is None else str(args.eval_data), quality, seconds, decode_seconds, runnable_bytes, notes)
    report["stages"] = stages
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + "\n", args.model)
    if args.json:
        print_json(report)
        return 0
    _print(result, report)
    console.print(f"wrote {args.output}" + (f", {args.runnable}" if args.runnable else ""))
    return 0


DEFAULT_TOLERANCE = 0.01
DEFAULT_MAX_DROP = 1.0


def _retrainer(args: argparse.Namespace, model: onnx.ModelProto) -> Retrainer:
    """Deep Compression's retraining from onnxprune.training (PyTorch imported here, signals held)."""
    try:
        retraining = import_deferred("onnxprune.training.deep_compression")
        training = import_deferred("onnxprune.training")
    except ImportError:
        raise UsageError("--finetune-epochs needs PyTorch: pip install 'onnxprune[finetune]'") from None
    train = load_data(args.finetune_data, model, image_preprocess(args))
    teacher = load_model(args.teacher) if args.teacher else None
    return retraining.DistillRetrainer(train, training.FinetuneOptions(epochs=args.finetune_epochs / 2), teacher)
_BACK_OFF_STEPS = 4


def _drop_points(metric, quality) -> float:
    return 100.0 * loss(metric, quality["original"], quality["compressed"])


def _back_off(attempt, first, metric, max_drop: float, notes: list[str]):
    """Largest sparsity factor in [0, 1] (bisection, :data:`_BACK_OFF_STEPS` tries) whose metric drop on the
    evaluation data is at most ``max_drop`` points; the factor-1 try is ``first``."""
    drop = _drop_points(metric, first[1])
    if drop <= max_drop:
        notes.append(f"--max-drop {max_drop:g}: {metric.value} drops {drop:.2f} points at full sparsity: kept")
        return first
    with stage("compress: backing off sparsity to meet --max-drop", total=_BACK_OFF_STEPS, unit="tries") as s:
        low, high, best = 0.0, 1.0, None
        for _ in range(_BACK_OFF_STEPS):
            mid = (low + high) / 2
            tried = attempt(mid)
            s.advance()
            if _drop_points(metric, tried[1]) <= max_drop:
                low, best = mid, tried
            else:
                high = mid
    if best is None:
        best, low = attempt(0.0), 0.0
    notes.append(f"--max-drop {max_drop:g}: {metric.value} dropped {drop:.2f} points at full sparsity; every "
                 f"layer's sparsity scaled by {low:.3g} -> {_drop_points(metric, best[1]):.2f} points")
    return best


def _report(result: CompressResult, recover: Recover, eval_data: str | None, quality, seconds: float, decode_seconds: float, runnable_bytes: int | None,
            notes: list[str]) -> dict[str, object]:
    return {"source_bytes": result.source_bytes, "container_bytes": len(result.container), "ratio": result.ratio,
            "weights_ratio": result.weights_ratio(), "runnable_bytes": runnable_bytes,
            "compress_seconds": seconds, "decompress_seconds": decode_seconds, "quality": quality, "notes": notes,
            "recover": recover.value, "eval_data": eval_data, "layers": [{**r.__dict__, "kept": r.kept} for r in result.layers],
            "refit": [f.__dict__ for f in result.fits]}


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
        console.print(f"note: {note}", markup=False)
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
