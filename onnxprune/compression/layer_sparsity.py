"""Per-layer connection sparsity from a sensitivity run (Han et al. 2015, §4): each coded layer is pruned
alone at each sparsity of a grid (and refit, when compress will refit) and the metric is measured on data; a
layer gets the largest sparsity whose
loss is within ``tolerance``. Losses are measured one layer at a time, so the combined loss can be larger:
the compress report measures the final model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.activations import ActivationStream
from onnxprune.compression.pipeline import coded_weights
from onnxprune.compression.refit import refit
from onnxprune.data import Dataset
from onnxprune.metrics import (
    Metric,
    check_metric,
    default_metric,
    loss,
    metrics,
    outputs,
)
from onnxprune.passes.prune_connections import _keep_largest
from onnxprune.progress import stage
from onnxprune.recover import Recover

DEFAULT_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class LayerCurve:
    layer: str
    weights: int
    losses: tuple[tuple[float, float], ...]   # (sparsity, metric loss)


def layer_curves(model: onnx.ModelProto, data: Dataset, metric: Metric | None = None,
                 grid: tuple[float, ...] = DEFAULT_GRID, recover: Recover = Recover.NONE
                 ) -> tuple[Metric, list[LayerCurve]]:
    """Each coded layer's metric loss at each grid sparsity, pruned alone; with ``recover`` the layer is also
    refit (``compress.refit``, unshared) on ``data`` before measuring, as ``compress`` will."""
    reference = outputs(model, data)
    metric = metric or default_metric(data, reference)
    check_metric(metric, data, reference)
    baseline = metrics(reference, reference, data.labels)
    curves: list[LayerCurve] = []
    readers = {n.input[1]: n for n in model.graph.node if len(n.input) > 1}
    coded = coded_weights(model)
    stream = ActivationStream(model, data)       # each layer's input and output in the original, computed once
    with stage(f"layer sensitivity: {len(grid)} sparsities on {len(data)} samples", total=len(coded),
               unit="layers") as progress:
        for name, (_, layer) in coded.items():
            node = readers[name]
            known = {node.input[0]: stream.get(node.input[0]), node.output[0]: stream.get(node.output[0])}
            curves.append(_curve(model, data, name, layer, node, grid, recover, metric, baseline, reference, known))
            progress.advance(layer)
    return metric, curves


def _curve(model: onnx.ModelProto, data: Dataset, name: str, layer: str, node: onnx.NodeProto,
           grid: tuple[float, ...], recover: Recover, metric: Metric, baseline: dict[str, float],
           reference: np.ndarray, known: dict[str, np.ndarray]) -> LayerCurve:
    """One layer's (sparsity, metric loss) points, the layer pruned alone. ``known``: the layer's input and
    original output (the same at every point); only the nodes from the layer on are run per point."""
    index = next(i for i, t in enumerate(model.graph.initializer) if t.name == name)
    w = numpy_helper.to_array(model.graph.initializer[index])
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    points = []
    final = model.graph.output[0].name
    for s in grid:
        trial.graph.initializer[index].CopyFrom(numpy_helper.from_array(_keep_largest(w, s), name))
        candidate = trial if recover is Recover.NONE else _refit_alone(model, trial, data, name, recover, known)
        got = ActivationStream(candidate, data, known={node.input[0]: known[node.input[0]]}).get(final)
        points.append((s, loss(metric, baseline, metrics(reference, got, data.labels))))
    return LayerCurve(layer, int(w.size), tuple(points))


def _refit_alone(model: onnx.ModelProto, trial: onnx.ModelProto, data: Dataset, name: str,
                 recover: Recover, known: dict[str, np.ndarray]) -> onnx.ModelProto:
    fitted = onnx.ModelProto()
    fitted.CopyFrom(trial)
    refit(model, fitted, data, {name}, lambda _, w: w, recover, known=known)
    return fitted


def sparsity_for(curves: list[LayerCurve], tolerance: float) -> tuple[tuple[str, float], ...]:
    """(exact layer name, sparsity) per layer: the largest grid sparsity whose loss <= tolerance (0 if none)."""
    out = []
    for c in curves:
        ok = [s for s, lost in c.losses if lost <= tolerance]
        out.append((_literal(c.layer), max(ok, default=0.0)))
    return tuple(out)


def _literal(name: str) -> str:
    """A glob that matches exactly ``name`` (brackets escape the glob characters)."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def weighted_sparsity(curves: list[LayerCurve], chosen: tuple[tuple[str, float], ...]) -> float:
    sizes = np.array([c.weights for c in curves], dtype=np.float64)
    return float((sizes * np.array([s for _, s in chosen])).sum() / sizes.sum())
