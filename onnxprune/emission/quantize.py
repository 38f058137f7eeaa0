"""int8 through ONNX Runtime's quantization tools: ``quant_pre_process`` first, opset >= 13 for per-channel
QDQ (per-channel DequantizeLinear does not exist at opset 11/12), then ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations calibrated with MinMax) or ``quantize_dynamic``."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from onnxprune.data import Dataset
from onnxprune.emission.options import Int8
from onnxprune.errors import VerificationError
from onnxprune.logs import logger_level
from onnxprune.normalize import default_opset
from onnxprune.signals import import_deferred
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


def quiet_root_logger() -> contextlib.AbstractContextManager[None]:
    """ORT's quantization tools log through the root logger: ERROR only inside the block, restored after."""
    return logger_level(logging.ERROR)


def preprocess(src: Path, dst: Path, notes: list[str]) -> None:
    quant_pre_process = import_deferred("onnxruntime.quantization.shape_inference").quant_pre_process

    src, dst = src.resolve(), dst.resolve()
    with private_cwd(), quiet_root_logger():  # symbolic shape inference writes sym_shape_infer_temp.onnx into the cwd on failure
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
    """Quantize ``src`` into ``dst`` (one shot: every quantizable node)."""
    quantize_prepared(prepare(src, workdir, notes), dst, mode, data, notes)


def prepare(src: Path, workdir: Path, notes: list[str]) -> Path:
    """ORT's pre-processing, the opset upgrade for per-channel QDQ, and a unique name on every node (the
    quantizer excludes nodes by name); returns the prepared model's path in ``workdir``."""
    from onnxprune.emission.int8_search import name_nodes

    pre = workdir / "preprocessed.onnx"
    preprocess(src, pre, notes)
    upgrade_opset(pre, notes)
    model = onnx.load(pre)
    name_nodes(model)
    onnx.save(model, pre)
    return pre


def quantize_prepared(pre: Path, dst: Path, mode: Int8, data: Dataset | None, notes: list[str],
                      keep_float: list[str] | None = None, calibration: str = "minmax",
                      symmetric_activations: bool = False, float_inputs: bool = False) -> None:
    """Quantize a :func:`prepare` d model, leaving the nodes named in ``keep_float`` in float32. ORT leaves them
    unquantized but still quantizes a tensor they read when its producer is quantized; with ``float_inputs``
    their activation inputs are rewired to the float tensor before its QuantizeLinear (with Relu/Clip kept
    explicit, ``QDQKeepRemovableActivations``, so that tensor is the activation's output; the explicit
    activations cost ORT ~10% of int8 speed on ResNet-56, so only the accuracy-driven search asks for it)."""
    ort_quantization = import_deferred("onnxruntime.quantization")
    CalibrationMethod, QuantFormat, QuantType = (ort_quantization.CalibrationMethod, ort_quantization.QuantFormat,
                                                 ort_quantization.QuantType)
    quantize_dynamic, quantize_static = ort_quantization.quantize_dynamic, ort_quantization.quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    unquantizable = _unquantizable(onnx.load(pre, load_external_data=False))
    if unquantizable and not any("grouped ConvTranspose" in n for n in notes):
        notes.append(f"left in float32: {len(unquantizable)} grouped ConvTranspose node(s) (ORT's per-channel "
                     f"quantizer cannot handle them)")
    exclude = sorted(set(unquantizable) | set(keep_float or ()))
    extra: dict[str, object] = {"QDQKeepRemovableActivations": True} if float_inputs else {}
    if symmetric_activations:
        extra["ActivationSymmetric"] = True

    def run(per_channel: bool) -> None:
        if mode is Int8.STATIC:
            assert data is not None
            quantize_static(str(pre), str(dst), _Reader(data), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
                            extra_options=extra)
        else:
            quantize_dynamic(str(pre), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude)

    try:
        with quiet_root_logger():
            run(per_channel=True)
    except Exception as first:  # noqa: BLE001 - ORT's quantizer raises plain exceptions
        notes.append(f"per-channel quantization failed ({' '.join(str(first).split())[:120]}); used per-tensor")
        try:
            with quiet_root_logger():
                run(per_channel=False)
        except Exception as e:
            raise VerificationError(f"int8 quantization failed: {' '.join(str(e).split())[:300]}") from e
    if mode is Int8.STATIC and keep_float and float_inputs:
        model = onnx.load(dst)
        if float_inputs_for(model, set(keep_float)):
            onnx.save(model, dst)


#: ops between a computing layer and the node kept float whose inputs are made float too
_FLOAT_THROUGH = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "MaxPool",
                            "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def float_inputs_for(model: onnx.ModelProto, names: set[str]) -> int:
    """Rewire the activation inputs of the nodes in ``names`` from ``DequantizeLinear(QuantizeLinear(x))`` to
    ``x`` — and, where ``x`` comes from an activation or data-movement op (Relu, Clip, MaxPool, Reshape...),
    that op's inputs too, back to the previous computing layer's float output — then drop Q/DQ nodes nothing
    reads any more; returns how many inputs were rewired."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    rewired = 0
    pending = [n for n in model.graph.node if n.name in names]
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for i, x in enumerate(node.input):
            dq = producer.get(x)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                    node.input[i] = x = q.input[0]
                    rewired += 1
            source = producer.get(x)
            if source is not None and source.op_type in _FLOAT_THROUGH:
                pending.append(source)
    if rewired:
        outputs = {o.name for o in model.graph.output}
        while True:
            read = {x for n in model.graph.node for x in n.input} | outputs
            dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                    and not any(o in read for o in n.output)]
            if not dead:
                break
            for n in dead:
                model.graph.node.remove(n)
        used = {x for n in model.graph.node for x in n.input}
        for t in [t for t in model.graph.initializer if t.name not in used]:
            model.graph.initializer.remove(t)
    return rewired


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
