"""``onnxprune emit MODEL --target cpu|cuda|mobile -o DIR``: artifacts for ONNX Runtime plus manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.common import add_data_args, cli_text, console, print_json, step_from_args
from onnxprune.emission import Style, Target
from onnxprune.emission.manifest import Manifest
from onnxprune.emission.options import CalibrationMethod
from onnxprune.metrics import METRIC_HELP
from onnxprune.steps.base import StepContext
from onnxprune.steps.emit import EmitStep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emit", help="write what ONNX Runtime should load for cpu, cuda or mobile, with a manifest",
                       description="BatchNorm is folded first; every artifact is loaded back in ONNX Runtime and "
                                   "compared with the source model before the folder appears.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--target", required=True, choices=[t.value for t in Target])
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--int8", nargs="?", const="static", choices=["static", "dynamic"],
                   help="also emit int8: static (QDQ, per-channel, needs --data) or dynamic")
    add_data_args(p, "int8 calibration data, also used for the manifest's accuracy/agreement", limit=256)
    p.add_argument("--eval-data", type=Path, help="data for the manifest's accuracy/agreement (default: --data; "
                                                  "same forms and preprocessing as --data)")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="static int8, accuracy-driven: measure the metric on --eval-data (else --data) and keep the "
                        "nodes that cost most in float until it drops by at most POINTS (percentage points)")
    p.add_argument("--metric", metavar="METRIC", help="metric for --max-drop: " + METRIC_HELP)
    p.add_argument("--calibration-method", choices=[c.value for c in CalibrationMethod], default="minmax",
                   help="static int8 activation ranges: minmax (default), entropy, percentile, or auto (each "
                        "measured on --eval-data, else --data; the best is kept)")
    p.add_argument("--symmetric-activations", action="store_true",
                   help="static int8: int8 activations with zero point 0 (default: uint8, asymmetric)")
    p.add_argument("--calibration", choices=["data", "random"], default="data",
                   help="'random' calibrates int8 on random inputs when no --data exists (poor accuracy)")
    p.add_argument("--for-this-machine", action="store_true",
                   help="cpu: optimize at ORT's ALL level, including this CPU's NCHWc layout (not portable)")
    p.add_argument("--style", choices=[s.value for s in Style], default="fixed",
                   help="mobile: ORT format optimization style (runtime for NNAPI/CoreML)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="fixed shape for an input (required for dynamic inputs with --target mobile)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = step_from_args(EmitStep, args).run(StepContext(Path(args.model), args.output))
    if args.json:
        print_json(result.report)
        return 0
    _print(result.details.folder, result.details.manifest)
    return 0


def _print(folder: Path, m: Manifest) -> None:
    console.print(f"emitted for {m.target} into {folder}/ (passes: {', '.join(m.passes)})")
    for f in m.files:
        line = f"  {f.name:28s} {f.bytes / 1e6:7.2f} MB  {f.role}"
        console.print(line, markup=False, soft_wrap=True)
        for a in f.agreement:
            parts = [f"max abs diff {a.max_abs_diff:.3g} (max |out| {a.max_abs_output:.3g})"]
            if a.rel_l2 is not None:
                parts.append(f"relative L2 {a.rel_l2:.2g}")
            if a.top1_agreement is not None:
                parts.append(f"top-1 agreement {a.top1_agreement:.2%}")
            if a.accuracy is not None:
                parts.append(f"accuracy {a.accuracy:.2%} (source {a.source_accuracy:.2%})")
            for key, value in (a.metrics or {}).items():
                source = (a.source_metrics or {}).get(key)
                parts.append(f"{key} {value:.2%}" + (f" (source {source:.2%})" if source is not None else ""))
            console.print(f"      vs source on {a.inputs}: " + ", ".join(parts), markup=False, soft_wrap=True)
    for note in m.notes:
        console.print(f"  note: {cli_text(note)}", markup=False, soft_wrap=True)
