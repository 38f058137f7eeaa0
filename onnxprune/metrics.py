"""Quality of a rewritten model's outputs against the original's on data.

Metrics: ``accuracy`` (top-1 vs labels), ``agreement`` (top-1 agreement with the original), ``cosine`` (mean cosine
similarity of the outputs), ``rel-l2`` (relative L2 error), ``kl`` (KL(original softmax || rewritten softmax)).
The top-1 metrics and KL need 2-D (N, classes) outputs. Default metric: accuracy with labels, agreement without,
cosine for outputs that are not 2-D. Only the model's first output is compared.
"""

from __future__ import annotations

import enum

import numpy as np
import onnx

from onnxprune.data import Dataset
from onnxprune.errors import UsageError


class Metric(enum.Enum):
    ACCURACY = "accuracy"        # top-1 vs labels (higher is better)
    AGREEMENT = "agreement"      # top-1 agreement with the original model
    COSINE = "cosine"            # mean cosine similarity of outputs with the original's
    REL_L2 = "rel-l2"            # relative L2 error vs the original's outputs (lower is better)
    KL = "kl"                    # KL(original softmax || pruned softmax) (lower is better)


LOWER_IS_BETTER = {Metric.REL_L2, Metric.KL}


def outputs(model: onnx.ModelProto, data: Dataset) -> np.ndarray:
    """The first output on every sample, with ONNX Runtime's graph optimizations on (as deployed: metrics compare
    models evaluated the same way, and are twice as fast as with optimizations off)."""
    from onnxprune.activations import ActivationStream

    stream = ActivationStream(model, data)
    name = model.graph.output[0].name
    value = stream.get(name)
    axis = stream.sample_axis(name)
    if axis is None and value.shape[:1] != (len(data),):
        raise UsageError(f"cannot tell which axis of output {name!r} {list(value.shape)} indexes the samples")
    return np.moveaxis(value, axis or 0, 0)   # samples first (a sequence-first output is (T, N, C))


def metrics(reference: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Every metric of ``got`` against the original ``reference`` outputs (and labels when given)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = got.reshape(len(got), -1).astype(np.float64)
    m = {Metric.REL_L2.value: float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)),
         Metric.COSINE.value: float(np.mean((ref * out).sum(1) / np.maximum(
             np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)))}
    if reference.ndim == 2:
        m[Metric.AGREEMENT.value] = float((out.argmax(1) == ref.argmax(1)).mean())
        p = np.exp(ref - ref.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        q = np.exp(out - out.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        m[Metric.KL.value] = float(np.mean((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1)))
        if labels is not None:
            m[Metric.ACCURACY.value] = float((out.argmax(1) == labels).mean())
    return m


def loss(metric: Metric, baseline: dict[str, float], value: dict[str, float]) -> float:
    """How much worse ``value`` is than ``baseline`` (>= 0 means worse)."""
    b, v = baseline[metric.value], value[metric.value]
    return v - b if metric in LOWER_IS_BETTER else b - v


def default_metric(data: Dataset, reference: np.ndarray) -> Metric:
    if reference.ndim != 2:
        return Metric.COSINE
    return Metric.ACCURACY if data.labels is not None else Metric.AGREEMENT


def check_metric(metric: Metric, data: Dataset, reference: np.ndarray) -> None:
    if metric is Metric.ACCURACY and data.labels is None:
        raise UsageError("--metric accuracy needs labels in the data ('labels' array or class subfolders)")
    if metric in (Metric.ACCURACY, Metric.AGREEMENT, Metric.KL) and reference.ndim != 2:
        raise UsageError(f"--metric {metric.value} needs a 2-D (batch, classes) first output; this one has shape "
                         f"{list(reference.shape)}: use cosine or rel-l2")
