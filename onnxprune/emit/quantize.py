"""int8 through ONNX Runtime's quantization tools: ``quant_pre_process`` first, opset >= 13 for per-channel
QDQ (per-channel DequantizeLinear does not exist at opset 11/12), then ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations calibrated with MinMax) or ``quantize_dynamic``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from onnxprune.data import Dataset
from onnxprune.emit.options import Int8
from onnxprune.errors import VerificationError
from onnxprune.normalize import default_opset
from onnxprune.workdir import private_cwd

PER_CHANNEL_MIN_OPSET = 13


class _Reader:
    """CalibrationDataReader over a Dataset, one sample per call."""

    def __init__(self, data: Dataset) -> None:
        self._batches = iter(list(data.batches(1)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it for some calibrators only
        pass


def preprocess(src: Path, dst: Path, notes: list[str]) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)
    src, dst = src.resolve(), dst.resolve()
    with private_cwd():  # symbolic shape inference writes sym_shape_infer_temp.onnx into the cwd on failure
        try:
            quant_pre_process(str(src), str(dst))
        except Exception as e:  # symbolic shape inference fails on some graphs: retry without it
            notes.append(f"quant_pre_process without symbolic shape inference ({type(e).__name__})")
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def upgrade_opset(path: Path, notes: list[str]) -> None:
    model = onnx.load(path)
    opset = default_opset(model)
    if opset < PER_CHANNEL_MIN_OPSET:
        model = version_converter.convert_version(model, PER_CHANNEL_MIN_OPSET)
        onnx.save(model, path)
        notes.append(f"opset upgraded {opset} -> {PER_CHANNEL_MIN_OPSET} for per-channel QDQ")


def quantize(src: Path, dst: Path, mode: Int8, data: Dataset | None, workdir: Path, notes: list[str]) -> None:
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    pre = workdir / "preprocessed.onnx"
    preprocess(src, pre, notes)
    upgrade_opset(pre, notes)
    exclude = _unquantizable(onnx.load(pre, load_external_data=False))
    if exclude:
        notes.append(f"left in float32: {len(exclude)} grouped ConvTranspose node(s) (ORT's per-channel quantizer "
                     f"cannot handle them)")

    def run(per_channel: bool) -> None:
        if mode is Int8.STATIC:
            assert data is not None
            quantize_static(str(pre), str(dst), _Reader(data), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        else:
            quantize_dynamic(str(pre), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude)

    try:
        run(per_channel=True)
    except Exception as first:  # noqa: BLE001 - ORT's quantizer raises plain exceptions
        notes.append(f"per-channel quantization failed ({' '.join(str(first).split())[:120]}); used per-tensor")
        try:
            run(per_channel=False)
        except Exception as e:  # noqa: BLE001
            raise VerificationError(f"int8 quantization failed: {' '.join(str(e).split())[:300]}") from e


def _unquantizable(model: onnx.ModelProto) -> list[str]:
    """Nodes ORT's quantizer mishandles: ConvTranspose with group > 1 (per-channel scales of the wrong size)."""
    out = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "ConvTranspose" and group > 1:
            out.append(n.name)
    return out


def int8_role(path: Path, mode: Int8) -> str:
    """What the int8 file holds, read from its nodes (static: QDQ pairs; dynamic: DynamicQuantizeLinear feeding
    ConvInteger/MatMulInteger), and whether its weight scales are per channel."""
    model = onnx.load(path, load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    per_channel = any(n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in inits
                      and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1
                      for n in model.graph.node)
    if mode is Int8.DYNAMIC:
        kernels = "/".join(sorted(ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}))
        return f"int8 dynamic ({kernels or 'no quantized ops'}; activations quantized at run time)"
    return f"int8 static (QDQ: QuantizeLinear/DequantizeLinear, {'per-channel' if per_channel else 'per-tensor'} " \
           f"int8 weights, uint8 activations calibrated)"
