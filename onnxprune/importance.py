"""Channel importance: a score per unit of every group (higher = more important, kept first).

Every score is normalized per layer (divided by that layer's mean over its channels) before layers are
combined, so groups with several producers (residual stages) and global ranking across groups compare like
with like. With ``p`` ranging over a unit's producers (the sources whose output channel it is, plus the
depthwise convs it passes through) and ``c`` over its consumers (layers whose weights read it):

- ``l1``  (default, Li et al. 2017): ``mean_p |W_p[i]|_1 / mean_j |W_p[j]|_1``, where ``W_p`` is the filter as it
  acts after an unfolded BatchNorm (``W_p[i] * |gamma_i / sqrt(var_i + eps)|``), so a model scores the same
  before and after ``fold``
- ``l2``: the same with L2 norms
- ``random``: uniform in [0, 1), seeded by ``--seed`` and the group id (the baseline of the source notes)
- ``bn-scale``: ``mean_b |gamma_b[i]| / mean_j |gamma_b[j]|`` over the BatchNorms on the unit's path (read
  before folding); groups without a BatchNorm fall back to ``l1``
- ``dwpw`` (the source notes' depthwise/pointwise rule): ``l1`` + ``mean_c |W_c[:, i]|_1 / mean_j |W_c[:, j]|_1``
  — a depthwise channel is scored by its own filter together with the pointwise weights that read it.

Data-driven (need calibration data; the tensors scored are those the consumers and depthwise convs read, i.e.
after the activation; Hu et al. 2016 for APoZ):

- ``activation``: mean |x| of the channel over samples and positions, per tensor normalized
- ``apoz``: ``1 - APoZ`` (average percentage of zeros) of the channel; APoZ is only informative after a ReLU-like
  activation, so ties (e.g. no zeros at all after hardswish) are broken by ``activation`` at 1e-3 weight.
"""

from __future__ import annotations

import enum
import zlib
from collections import defaultdict

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.channels import ChannelAnalysis
from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.graph import constant_value
from onnxprune.passes.fold_batchnorm import batchnorm_affine
from onnxprune.verify import session_with_outputs


class Criterion(enum.Enum):
    """How a channel's importance is scored. ``uniform``: every channel of a group scores the same, so the first
    ones are kept; for a net that will be trained again from scratch, where which channels stay does not matter,
    only how many (Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019). With ``target_latency`` and
    ``global_ranking`` each step of the latency planner removes the fewest MACs per millisecond saved: a plan for
    the most MACs within the budget, up to the greedy's gap (:mod:`onnxprune.latency.planner`)."""

    L1 = "l1"
    L2 = "l2"
    RANDOM = "random"
    UNIFORM = "uniform"
    BN_SCALE = "bn-scale"
    DW_PW = "dwpw"
    ACTIVATION = "activation"
    APOZ = "apoz"

    @property
    def needs_data(self) -> bool:
        return self in (Criterion.ACTIVATION, Criterion.APOZ)


def _norms(rows: np.ndarray, criterion: Criterion) -> np.ndarray:
    rows = rows.astype(np.float64)
    n = np.sqrt((rows ** 2).sum(1)) if criterion is Criterion.L2 else np.abs(rows).sum(1)
    mean = n.mean() if n.size else 0.0
    return n / mean if mean > 0 else np.zeros_like(n)


def source_filters(src_node: gs.Node, kind: str) -> np.ndarray | None:
    """One row per output channel of a source layer."""
    w = constant_value(src_node.inputs[1])
    if w is None:
        return None
    if kind == "conv" or kind == "depthwise" and src_node.op == "Conv":
        return w.reshape(w.shape[0], -1)
    if src_node.op == "ConvTranspose":
        group = int(src_node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        g = w.reshape((group, cin // group, cout_g, -1)).transpose(0, 2, 1, 3)
        return g.reshape(group * cout_g, -1)
    if kind == "gemm":
        return w if int(src_node.attrs.get("transB", 0)) else w.T
    if kind == "matmul":
        return w.T
    return None


def consumer_columns(node: gs.Node) -> np.ndarray | None:
    """One row per input channel position of a consumer layer: the weights that read it."""
    w = constant_value(node.inputs[1])
    if w is None:
        return None
    if node.op == "Conv":
        group = int(node.attrs.get("group", 1))
        if group == 1:
            return w.swapaxes(0, 1).reshape(w.shape[1], -1)
        per = w.shape[0] // group
        blocks = [w[g * per:(g + 1) * per].swapaxes(0, 1).reshape(w.shape[1], -1) for g in range(group)]
        return np.concatenate(blocks)
    if node.op == "ConvTranspose":
        return w.reshape(w.shape[0], -1)
    if node.op == "Gemm":
        return w.T if int(node.attrs.get("transB", 0)) else w
    if node.op == "MatMul":
        return w
    return None


class _Accumulator:
    """Sums per-layer normalized scores into units and counts contributions, for means."""

    def __init__(self, analysis: ChannelAnalysis) -> None:
        self.roots = analysis.roots
        self.total: dict[int, float] = defaultdict(float)
        self.count: dict[int, int] = defaultdict(int)

    def add(self, elems: np.ndarray, values: np.ndarray) -> None:
        # elements repeated along a flattened axis contribute once per layer: average them first
        roots, inverse = np.unique(self.roots[elems], return_inverse=True)
        means = np.bincount(inverse, weights=values) / np.bincount(inverse)
        for r, v in zip(roots.tolist(), means.tolist()):
            self.total[r] += v
            self.count[r] += 1

    def mean(self, root: int) -> float | None:
        return self.total[root] / self.count[root] if self.count.get(root) else None


def _bn_scale_after(node: gs.Node) -> np.ndarray | None:
    """|gamma / sqrt(var + eps)| of a BatchNormalization that is the only reader of ``node``'s output, directly
    or behind the layer's bias written as its own constant Add (Paddle exports)."""
    readers = node.outputs[0].outputs
    if len(readers) == 1 and readers[0].op == "Add" and any(constant_value(t) is not None for t in readers[0].inputs):
        readers = readers[0].outputs[0].outputs
    if len(readers) != 1 or readers[0].op != "BatchNormalization":
        return None
    affine = batchnorm_affine(readers[0])
    return None if isinstance(affine, str) else np.abs(affine[0])


def _effective_rows(node: gs.Node, rows: np.ndarray) -> np.ndarray:
    """Filters as they act after an unfolded BatchNorm: a model scores the same before and after folding."""
    scale = _bn_scale_after(node)
    return rows if scale is None or scale.shape[0] != rows.shape[0] else rows * scale[:, None]


def _producer_scores(analysis: ChannelAnalysis, criterion: Criterion) -> _Accumulator:
    acc = _Accumulator(analysis)
    norm = Criterion.L2 if criterion is Criterion.L2 else Criterion.L1
    for src in analysis.sources:
        if src.node is None:
            continue
        rows = source_filters(src.node, src.kind)
        if rows is not None and rows.shape[0] == len(src.elems):
            acc.add(src.elems, _norms(_effective_rows(src.node, rows), norm))
    for node in analysis.depthwise:
        layout = analysis.layouts.get(node.inputs[0].name)
        rows = source_filters(node, "depthwise")
        if layout is not None and rows is not None:
            acc.add(layout.elems, _norms(_effective_rows(node, rows), norm))
    return acc


def _consumer_scores(analysis: ChannelAnalysis) -> _Accumulator:
    acc = _Accumulator(analysis)
    for node, tensor in analysis.consumers:
        layout = analysis.layouts.get(tensor)
        cols = consumer_columns(node)
        if layout is not None and cols is not None and cols.shape[0] == len(layout):
            acc.add(layout.elems, _norms(cols, Criterion.L1))
    return acc


def _bn_scores(analysis: ChannelAnalysis) -> _Accumulator:
    acc = _Accumulator(analysis)
    for node in analysis.graph.nodes:
        if node.op != "BatchNormalization":
            continue
        layout = analysis.layouts.get(node.inputs[0].name)
        gamma = constant_value(node.inputs[1])
        if layout is not None and gamma is not None and gamma.shape[0] == len(layout):
            acc.add(layout.elems, _norms(gamma.reshape(-1, 1), Criterion.L1))
    return acc


def _scored_tensors(analysis: ChannelAnalysis) -> list[str]:
    names = [t for _, t in analysis.consumers] + [n.inputs[0].name for n in analysis.depthwise]
    return [t for t in dict.fromkeys(names) if t in analysis.layouts]


def _activation_scores(analysis: ChannelAnalysis, model: onnx.ModelProto, criterion: Criterion, data: Dataset,
                       batch: int = 32) -> _Accumulator:
    """Per-position mean |x| and fraction of zeros of every scored tensor, streamed over ``data``."""
    tensors = _scored_tensors(analysis)
    session = session_with_outputs(model, tensors)
    sums: dict[str, np.ndarray] = {}
    zeros: dict[str, np.ndarray] = {}
    count: dict[str, int] = defaultdict(int)
    for feeds in data.batches(batch):
        for name, x in zip(tensors, session.run(tensors, feeds)):
            axis = analysis.layouts[name].axis
            x = np.moveaxis(np.asarray(x), axis, 1)
            x = x.reshape(x.shape[0], x.shape[1], -1)
            s, z = np.abs(x).sum((0, 2), dtype=np.float64), (x == 0).sum((0, 2), dtype=np.float64)
            sums[name] = sums[name] + s if name in sums else s
            zeros[name] = zeros[name] + z if name in zeros else z
            count[name] += x.shape[0] * x.shape[2]
    acc = _Accumulator(analysis)
    for name in tensors:
        if name not in sums or sums[name].shape[0] != len(analysis.layouts[name]):
            continue
        activation = sums[name] / count[name]
        activation = activation / activation.mean() if activation.mean() > 0 else np.zeros_like(activation)
        values = activation
        if criterion is Criterion.APOZ:
            nonzero = 1.0 - zeros[name] / count[name]
            nonzero = nonzero / nonzero.mean() if nonzero.mean() > 0 else np.zeros_like(nonzero)
            values = nonzero + 1e-3 * activation
        acc.add(analysis.layouts[name].elems, values)
    return acc


def score_groups(analysis: ChannelAnalysis, criterion: Criterion = Criterion.L1, seed: int = 0,
                 data: Dataset | None = None, model: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
    """Scores for the units of every prunable group, keyed by group id. The data-driven criteria (``activation``,
    ``apoz``) run ``model`` (the analysed one) on calibration ``data``."""
    scores: dict[str, np.ndarray] = {}
    if criterion.needs_data:
        if data is None or model is None:
            raise UsageError(f"`criterion` {criterion.value} needs calibration data (`data`)")
        acc = _activation_scores(analysis, model, criterion, data)
        return {g.id: np.asarray([acc.mean(u) or 0.0 for u in g.units.tolist()]) for g in analysis.prunable}
    if criterion is Criterion.UNIFORM:
        return {g.id: np.ones(g.channels) for g in analysis.prunable}
    if criterion is Criterion.RANDOM:
        for g in analysis.prunable:
            rng = np.random.default_rng([seed, zlib.crc32(g.id.encode())])
            scores[g.id] = rng.random(g.channels)
        return scores
    producers = _producer_scores(analysis, criterion)
    extra = _consumer_scores(analysis) if criterion is Criterion.DW_PW else None
    bn = _bn_scores(analysis) if criterion is Criterion.BN_SCALE else None
    for g in analysis.prunable:
        units = g.units.tolist()
        if bn is not None and all(bn.mean(u) is not None for u in units):
            values = [bn.mean(u) for u in units]
        else:
            values = [producers.mean(u) or 0.0 for u in units]
            if extra is not None:
                values = [v + (extra.mean(u) or 0.0) for v, u in zip(values, units)]
        scores[g.id] = np.asarray(values, dtype=np.float64)
    return scores
