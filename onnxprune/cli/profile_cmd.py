"""``onnxprune profile MODEL -o TABLE.json``: measure each prunable layer's latency against its channel count."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import (
    add_input_shape_args,
    cli_text,
    console,
    err_console,
    print_json,
    step_from_args,
)
from onnxprune.steps.base import StepContext
from onnxprune.steps.profile import ProfileStep
from onnxprune.targets import TARGETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure each prunable layer's latency against its kept channel count",
                       description="Time every Conv/ConvTranspose/Gemm whose channels pruning can change, alone, "
                                   "with the model's shapes, at a grid of channel counts, on this machine with ONNX "
                                   "Runtime; calibrate on the whole model pruned uniformly at 25/50/75%. "
                                   "`prune --target-latency R --latency-table TABLE.json` plans on the table.")
    p.add_argument("model", help="input .onnx file (fold it first: the table is for the model prune will read)")
    p.add_argument("-o", "--output", required=True, help="the latency table (JSON, written atomically)")
    p.add_argument("--target", choices=list(TARGETS), default="cpu",
                   help="runtime: cpu (float32), cuda (float16, needs onnxruntime-gpu), mobile (float32 on this "
                        "CPU) (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, as the model will run (default 1)")
    p.add_argument("--cache", metavar="DIR|none",
                   help="cache of measurements per ORT version, provider, threads, CPU and layer (default "
                        "$ONNXPRUNE_CACHE_DIR or ~/.cache/onnxprune; none: no cache)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    add_input_shape_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = step_from_args(ProfileStep, args).run(StepContext(Path(args.model), Path(args.output)))
    for note in result.notes:
        err_console.print(f"onnxprune: note: {cli_text(note)}", soft_wrap=True, markup=False)
    r = result.report
    if args.json:
        print_json(r)
        return 0
    table = result.details
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["input_shapes"].items())
    console.print(f"profiled {r['layers']} layers on {r['target']} with {r['threads']} thread(s) at {shapes}: "
                  f"{r['measured']} points measured, {r['cached']} reused (repeated layers or the cache), {r['seconds']:.1f} s")
    points = ", ".join(f"{ratio:.0%} pruned {m:.3g} ms (layers {s:.3g} ms)" for ratio, s, m in table.calibration)
    layers = (f"each layer its run less one session call ({table.call_ms * 1000:.1f} us)" if table.call_ms else
              "each layer its kernels' time (ORT's profiler)")
    console.print(f"whole model {r['model_ms']:.3g} ms (median, interleaved); calibration: {points}; {layers}",
                  soft_wrap=True)
    console.print(f"wrote {args.output}")
    return 0
