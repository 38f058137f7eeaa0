"""Accuracy-driven static int8: quantize, measure on held-out data, keep the costliest nodes in float until the
metric drop is within budget.

Rule:

1. Some nodes stay float from the start (:func:`default_float_nodes`, after ONNX Runtime's own advice for
   transformer-like and classifier parts): LayerNormalization, Softmax, a MatMul of two activations (attention
   scores and context), and the last weighted layer before each graph output (the classifier).
2. Everything else is quantized (QDQ, per-channel weights, calibrated activations) and the metric is measured
   on the evaluation data against the float model's value.
3. While the drop exceeds the budget, nodes are ranked by the error they add (:func:`error_increments`: the
   relative L2 error of a quantized node's output minus the largest error already present in its activation
   inputs, both against the float model on calibration samples — the per-tensor comparison ORT's
   ``qdq_loss_debug`` makes), and the top k are kept float, k = 1, 2, 4... until the budget holds; then the
   smallest such k is found by bisection. Each try is a full quantization and evaluation.

Limits: the metric is measured on at most :data:`EVAL_SAMPLES` samples; a model that misses the budget with
every ranked node in float is reported, not refused (the caller decides).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.data import Dataset
from onnxprune.metrics import LOWER_IS_BETTER, Metric, UserMetric, metrics
from onnxprune.output_layers import layers_before_outputs
from onnxprune.progress import stage

EVAL_SAMPLES = 1000
ERROR_SAMPLES = 32


@dataclass(frozen=True)
class FloatNode:
    """A node left in float32, and why."""

    name: str
    op: str
    reason: str


@dataclass(frozen=True)
class Int8Search:
    """What the accuracy-driven search did: the metric (float, all-int8, final), and the nodes kept float."""

    metric: str
    max_drop: float                  # in points (x100 of the metric)
    float_value: float
    first_value: float               # with only the default float nodes
    final_value: float
    kept_float: tuple[FloatNode, ...]
    tries: int
    samples: int
    data: str

    @property
    def drop(self) -> float:
        return _drop(self.metric, self.float_value, self.final_value)

    @property
    def within_budget(self) -> bool:
        return self.drop <= self.max_drop + 1e-9


def _drop(metric: str, reference: float, value: float) -> float:
    lower_better = metric in {m.value for m in LOWER_IS_BETTER}
    return 100.0 * ((value - reference) if lower_better else (reference - value))


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (ONNX Runtime's quantizer excludes nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        seen.add(node.name)


def default_float_nodes(model: onnx.ModelProto) -> list[FloatNode]:
    """LayerNormalization, Softmax, activation-by-activation MatMul, and the last weighted layer of each output."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, FloatNode] = {}
    for n in model.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax"):
            out[n.name] = FloatNode(n.name, n.op_type, f"{n.op_type} stays float (ONNX Runtime's advice)")
        elif n.op_type == "MatMul" and all(x not in inits for x in n.input):
            out[n.name] = FloatNode(n.name, n.op_type, "MatMul of two activations (attention) stays float")
    for node in layers_before_outputs(model):
        out[node.name] = FloatNode(node.name, node.op_type, "last layer before the output (classifier) stays float")
    return list(out.values())


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m.SerializeToString()


def _run_all(model: onnx.ModelProto, names: list[str], data: Dataset) -> dict[str, np.ndarray]:
    from onnxprune.verify import make_session

    m = onnx.ModelProto()
    m.ParseFromString(_with_outputs(model, names))
    session = make_session(m)
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data.batches(16):
        for name, v in zip(names, session.run(names, batch)):
            values[name].append(v)
    return {k: np.concatenate(v) for k, v in values.items()}


def error_increments(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, data: Dataset) -> dict[str, float]:
    """For each quantized node of ``qdq_model`` (one reading a dequantized activation), the error it adds: the
    relative L2 error of its output against the float model's same tensor, minus the largest relative error of
    its dequantized activation inputs against the float tensors they stand for (what arrived already
    quantized). Measured at the output, so an input whose quantization wipes out small channels next to a
    large one (invisible in that input's own relative error) is charged to the node that reads it. The QDQ
    model must keep activations explicit (``QDQKeepRemovableActivations``), so a node's output means the same
    in both models."""
    producer = {o: n for n in qdq_model.graph.node for o in n.output}
    inits = {t.name for t in qdq_model.graph.initializer}
    graph_inputs = {i.name for i in float_model.graph.input}
    float_names = {o for n in float_model.graph.node for o in n.output} | graph_inputs
    pairs: dict[str, str] = {}                       # DequantizeLinear output -> the float tensor it stands for
    for n in qdq_model.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits and q.input[0] in float_names:
            pairs[n.output[0]] = q.input[0]
    nodes = [n for n in qdq_model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
             and n.output and n.output[0] in float_names and any(x in pairs for x in n.input)]
    if not nodes:
        return {}
    outs = sorted({n.output[0] for n in nodes})
    ref = _run_all(float_model, sorted((set(outs) | set(pairs.values())) - graph_inputs), data)
    ref.update({name: np.asarray(v) for name, v in data.inputs.items()})
    got = _run_all(qdq_model, sorted(set(outs) | set(pairs)), data)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    costs: dict[str, float] = {}
    for n in nodes:
        arrived = max(rel(got[x], ref[pairs[x]]) for x in n.input if x in pairs)
        costs[n.name] = rel(got[n.output[0]], ref[n.output[0]]) - arrived
    return costs


@dataclass(frozen=True)
class _Try:
    value: float
    extra: list[str]       # ranked nodes kept float on top of the defaults
    path: Path


def search(quantize_excluding: Callable[[list[str]], Path], float_model: onnx.ModelProto, eval_data: Dataset,
           calibration: Dataset, metric: Metric | UserMetric, max_drop: float,
           data_label: str) -> tuple[Int8Search, Path]:
    """Run the search (module rule). ``quantize_excluding(names)`` writes a QDQ model keeping ``names`` float
    to a new path and returns it; the float model is ``float_model`` (the quantizer's input). Returns what was
    found and the path of the chosen model."""
    from onnxprune.metrics import outputs

    eval_data = eval_data.limit(EVAL_SAMPLES)
    reference = outputs(float_model, eval_data)
    labels = eval_data.labels
    float_value = metrics(reference, reference, labels)[metric.value]
    defaults = default_float_nodes(float_model)
    base = [f.name for f in defaults]
    tries = 0

    def value_with(extra: list[str]) -> tuple[float, Path]:
        nonlocal tries
        tries += 1
        path = quantize_excluding(base + extra)
        return metrics(reference, outputs(onnx.load(path), eval_data), labels)[metric.value], path

    with stage("int8: quantizing with the default float nodes"):
        first, first_path = value_with([])
    result = _Try(first, [], first_path)
    if _drop(metric.value, float_value, first) > max_drop:
        with stage("int8: ranking nodes by the error they add"):
            increments = error_increments(float_model, onnx.load(first_path), calibration.limit(ERROR_SAMPLES))
        ranked = [n for n, _ in sorted(increments.items(), key=lambda kv: -kv[1]) if n not in base]
        found: int | None = None
        low, k = 0, 1
        with stage("int8: keeping the costliest nodes in float", total=None, unit="tries") as s:
            while ranked:
                k = min(k, len(ranked))
                value, path = value_with(ranked[:k])
                s.advance()
                if _drop(metric.value, float_value, value) <= max_drop:
                    found, result = k, _Try(value, ranked[:k], path)
                    break
                if k == len(ranked):
                    result = _Try(value, ranked[:k], path)
                    break
                low, k = k, 2 * k
            if found is not None:
                high = found
                while high - low > 1:                 # smallest k in (low, high] that holds the budget
                    mid = (low + high) // 2
                    value, path = value_with(ranked[:mid])
                    s.advance()
                    if _drop(metric.value, float_value, value) <= max_drop:
                        high, result = mid, _Try(value, ranked[:mid], path)
                    else:
                        low = mid
        kept = [FloatNode(n, _op(float_model, n), f"adds relative error {increments[n]:.3g} when quantized")
                for n in result.extra]
    else:
        kept = []
    found_search = Int8Search(metric.value, max_drop, float_value, first, result.value,
                              tuple(defaults + kept), tries, len(eval_data), data_label)
    return found_search, result.path


def _op(model: onnx.ModelProto, name: str) -> str:
    return next((n.op_type for n in model.graph.node if n.name == name), "?")
