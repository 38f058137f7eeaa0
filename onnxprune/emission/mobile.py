"""Mobile: fixed input shapes, ORT format via ``onnxruntime.tools.convert_onnx_models_to_ort`` (with the
required-operators config for a reduced build), and ORT's mobile usability report (NNAPI / CoreML)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from pathlib import Path

import onnx

from onnxprune.emission.options import Style
from onnxprune.errors import UsageError
from onnxprune.interface import fix_input_shapes
from onnxprune.logs import captured_logger, logger_level
from onnxprune.signals import import_deferred
from onnxprune.verify import graph_inputs


def fix_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Every input made static (from ``shapes`` where dynamic, set per input and axis: a dim_param reused for
    two axes never ties them), intermediate and output shapes inferred again."""
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in shapes and any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims):
            raise UsageError(f"mobile needs fixed input shapes: input {vi.name!r} is "
                             f"{[d.dim_value or d.dim_param for d in dims]}; pass `input_shape` {vi.name}=1x...")
    return fix_input_shapes(model, shapes)


def to_ort_format(onnx_path: Path, out_dir: Path, style: Style) -> tuple[Path, Path]:
    """Convert; returns (the .ort model, the required-operators config)."""
    tool = import_deferred("onnxruntime.tools.convert_onnx_models_to_ort")
    OptimizationStyle, convert_onnx_models_to_ort = tool.OptimizationStyle, tool.convert_onnx_models_to_ort

    work = out_dir / "_ort"
    with contextlib.redirect_stdout(io.StringIO()), logger_level(logging.WARNING, "ort_format_model.utils"):
        # the tool prints progress lines
        convert_onnx_models_to_ort(onnx_path, output_dir=work,
                                   optimization_styles=[OptimizationStyle.Fixed if style is Style.FIXED
                                                        else OptimizationStyle.Runtime])
    ort_file = next(work.glob("*.ort"))
    config = next(work.glob("*.config"))
    final_ort = out_dir / (onnx_path.stem + ".ort")
    final_config = out_dir / "required_operators.config"
    shutil.move(ort_file, final_ort)
    shutil.move(config, final_config)
    shutil.rmtree(work)
    return final_ort, final_config


def usability_report(onnx_path: Path) -> tuple[str, dict[str, object]]:
    """ORT's NNAPI/CoreML usability check, as text and as a summary for the manifest."""
    analyze_model = import_deferred("onnxruntime.tools.mobile_helpers.usability_checker").analyze_model

    buffer = io.StringIO()
    with captured_logger("onnxprune.mobile_usability", buffer) as logger, \
            logger_level(logging.WARNING, "ort_format_model.utils"):
        try_eps = analyze_model(onnx_path, logger=logger)
    text = buffer.getvalue()
    summary: dict[str, object] = {"recommended": bool(try_eps)}
    for section in re.split(r"\n(?=Checking )", text):
        head = re.match(r"Checking (NNAPI|CoreML \w+)", section)
        counts = re.search(r"(\d+) partitions? with a total of (\d+)/(\d+) nodes", section)
        verdict = re.search(r"should perform well with [^:]+ as is: (YES|NO)", section)
        if head and counts:
            summary[head.group(1)] = {"partitions": int(counts.group(1)), "nodes_supported": int(counts.group(2)),
                                      "nodes": int(counts.group(3)),
                                      "performs_well_as_is": verdict.group(1) == "YES" if verdict else None}
    return text, summary
