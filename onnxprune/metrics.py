"""Quality of a rewritten model's outputs against the original's on data.

Metrics: ``accuracy`` (top-1 vs labels), ``agreement`` (top-1 agreement with the original), ``cosine`` (mean cosine
similarity of the outputs), ``rel-l2`` (relative L2 error), ``kl`` (KL(original softmax || rewritten softmax)).
The top-1 metrics and KL need 2-D (N, classes) outputs.

Sequence recognizers (3-D ``(N, T, classes)`` CTC outputs, blank = class 0, decoded greedily: best path, repeats
merged, blanks dropped): ``line-accuracy`` (decoded line equals the label row; labels are ``(N, L)`` int targets
padded with negative values or 0), ``cer`` (character error rate: edit distance / label length), and
``line-agreement`` (decoded line equals the original model's).

A user metric: ``--metric MODULE:FUNCTION`` names ``FUNCTION(outputs, labels) -> float`` (higher is better;
``outputs`` the model's first output with samples first, ``labels`` the data's labels or None), imported from
MODULE (on ``sys.path``, or a ``.py`` file path).

Default metric: accuracy with labels, agreement without, for 2-D outputs; line-accuracy / line-agreement for
3-D outputs with / without 2-D labels; cosine otherwise. Only the model's first output is compared.
"""

from __future__ import annotations

import contextvars
import enum
import importlib
import importlib.util
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    LINE_ACCURACY = "line-accuracy"    # CTC greedy decoding equals the label (higher is better)
    LINE_AGREEMENT = "line-agreement"  # CTC greedy decoding equals the original model's
    CER = "cer"                        # character error rate vs the label (lower is better)


@dataclass(frozen=True)
class UserMetric:
    """``MODULE:FUNCTION`` given to ``--metric``: ``FUNCTION(outputs, labels) -> float``, higher is better."""

    value: str
    function: Callable[[np.ndarray, np.ndarray | None], float] = field(compare=False, repr=False)


LOWER_IS_BETTER = {Metric.REL_L2, Metric.KL, Metric.CER}
METRIC_HELP = (f"{', '.join(m.value for m in Metric)} or MODULE:FUNCTION (FUNCTION(outputs, labels) -> float, higher is "
               f"better); default: accuracy with labels, else top-1 agreement, for (batch, classes) outputs; "
               f"line-accuracy / line-agreement for (batch, steps, classes) CTC outputs; cosine otherwise")
#: user metrics computed by :func:`metrics`, registered by :func:`parse_metric` into the current
#: :func:`metric_scope` (each CLI command runs in its own; outside any scope, one for the process)
_SCOPE: contextvars.ContextVar[dict[str, UserMetric]] = contextvars.ContextVar("onnxprune_user_metrics")
_PROCESS_SCOPE: dict[str, UserMetric] = {}
_loaded = itertools.count()


def _user_metrics() -> dict[str, UserMetric]:
    return _SCOPE.get(_PROCESS_SCOPE)


@contextmanager
def metric_scope() -> Iterator[None]:
    """User metrics parsed inside the block are computed by :func:`metrics` only inside it (a metric asked for
    by one command, or one test, never leaks into the next)."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def parse_metric(text: str | None) -> Metric | UserMetric | None:
    """``--metric``: a built-in name, or ``MODULE:FUNCTION`` (imported now; UsageError when it cannot be)."""
    if text is None:
        return None
    try:
        return Metric(text)
    except ValueError:
        pass
    module_name, sep, function_name = text.rpartition(":")
    if not sep or not module_name or not function_name.isidentifier():
        raise UsageError(f"`metric` {text!r}: expected one of {', '.join(m.value for m in Metric)} or "
                         f"MODULE:FUNCTION")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"onnxprune_user_metric_{next(_loaded)}", module_name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        function = getattr(module, function_name)
    except (ImportError, AttributeError, OSError, SyntaxError) as e:
        raise UsageError(f"`metric` {text!r}: cannot import it: {type(e).__name__}: {e}") from None
    if not callable(function):
        raise UsageError(f"`metric` {text!r}: {function_name} is not callable")
    metric = UserMetric(text, function)
    _user_metrics()[text] = metric
    return metric


def _user_value(metric: UserMetric, got: np.ndarray, labels: np.ndarray | None) -> float:
    try:
        value = float(metric.function(got, labels))
    except Exception as e:  # noqa: BLE001 - the user's code: its failure is reported as theirs, in one line
        raise UsageError(f"`metric` {metric.value} failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None
    if not np.isfinite(value):
        raise UsageError(f"`metric` {metric.value} returned {value}")
    return value


def ctc_greedy(logits: np.ndarray) -> list[tuple[int, ...]]:
    """Best-path decoding of ``(N, T, classes)`` scores: argmax per step, repeats merged, blanks (0) dropped."""
    best = logits.argmax(-1)
    keep = (best != 0) & np.concatenate([np.ones((len(best), 1), bool), best[:, 1:] != best[:, :-1]], axis=1)
    return [tuple(int(c) for c in row[k]) for row, k in zip(best, keep)]


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def _label_rows(labels: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in row if c > 0) for row in labels]


def sequence_metrics(reference: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """line-agreement, and with ``(N, L)`` labels line-accuracy and cer, of CTC outputs ``(N, T, classes)``."""
    decoded = ctc_greedy(got)
    m = {Metric.LINE_AGREEMENT.value: float(np.mean([a == b for a, b in zip(decoded, ctc_greedy(reference))]))}
    if labels is not None and labels.ndim == 2:
        truth = _label_rows(labels)
        m[Metric.LINE_ACCURACY.value] = float(np.mean([a == b for a, b in zip(decoded, truth)]))
        m[Metric.CER.value] = sum(edit_distance(a, b) for a, b in zip(decoded, truth)) / max(sum(map(len, truth)), 1)
    return m


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
        if labels is not None and labels.ndim == 1:
            m[Metric.ACCURACY.value] = float((out.argmax(1) == labels).mean())
    elif reference.ndim == 3:
        m.update(sequence_metrics(reference, got, labels))
    for user in _user_metrics().values():
        m[user.value] = _user_value(user, got, labels)
    return m


def loss(metric: Metric | UserMetric, baseline: dict[str, float], value: dict[str, float]) -> float:
    """How much worse ``value`` is than ``baseline`` (>= 0 means worse)."""
    b, v = baseline[metric.value], value[metric.value]
    return v - b if metric in LOWER_IS_BETTER else b - v


def default_metric(data: Dataset, reference: np.ndarray) -> Metric:
    if reference.ndim == 3:
        labelled = data.labels is not None and data.labels.ndim == 2
        return Metric.LINE_ACCURACY if labelled else Metric.LINE_AGREEMENT
    if reference.ndim != 2:
        return Metric.COSINE
    return Metric.ACCURACY if data.labels is not None and data.labels.ndim == 1 else Metric.AGREEMENT


def check_metric(metric: Metric | UserMetric, data: Dataset, reference: np.ndarray) -> None:
    if isinstance(metric, UserMetric):
        return
    if metric in (Metric.LINE_ACCURACY, Metric.CER) and (data.labels is None or data.labels.ndim != 2):
        raise UsageError(f"`metric` {metric.value} needs (samples, length) label rows in the data (CTC targets, "
                         f"padded with -1 or 0)")
    if metric in (Metric.LINE_ACCURACY, Metric.CER, Metric.LINE_AGREEMENT) and reference.ndim != 3:
        raise UsageError(f"`metric` {metric.value} needs a 3-D (batch, steps, classes) CTC output; this one has "
                         f"shape {list(reference.shape)}")
    if metric is Metric.ACCURACY and data.labels is None:
        raise UsageError("`metric` accuracy needs labels in the data ('labels' array or class subfolders)")
    if metric in (Metric.ACCURACY, Metric.AGREEMENT, Metric.KL) and reference.ndim != 2:
        raise UsageError(f"`metric` {metric.value} needs a 2-D (batch, classes) first output; this one has shape "
                         f"{list(reference.shape)}: use cosine or rel-l2")
