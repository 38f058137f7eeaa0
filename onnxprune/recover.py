"""Training-free accuracy recovery after pruning, from calibration data (no labels needed).

Every *consumer* whose input lost channels (a Conv, Gemm or MatMul reading a pruned tensor) is corrected:

- ``bias``: the removed channels' mean contribution is added to the consumer's bias. For a Conv,
  ``b'[o] = b[o] + sum_{c removed} sum_{kh,kw} W[o, c, kh, kw] * E[x_c]`` with ``E[x_c]`` the mean of input channel
  c over the calibration data (after the activation that feeds the consumer; zero padding at borders is
  ignored); for a Gemm/MatMul, ``b' = b + W[removed rows]^T E[x_removed]`` per input position (so Flatten->Gemm
  works per channel x spatial position).
- ``lsq`` (He et al. 2017, ThiNet): in topological order, each consumer's remaining weights and bias are refit by
  ridge least squares (pulled toward the layer's own weights, by a strength chosen on held-out rows when the
  calibration rows per unknown are few: see :func:`_ridge`) so that, fed with the *pruned* model's inputs, it reproduces the *original* model's
  outputs on calibration data. 2-D Conv via im2col on at most ``max_positions`` sampled output positions
  (memory bounded), one system per group for grouped and depthwise convs (so a pointwise conv after a depthwise
  one is refit on the depthwise outputs it now gets); Gemm (weights and bias); MatMul with a constant weight
  (weights only: MatMul has no bias). Other consumers (1-D/3-D convs, ConvTranspose) fall back to ``bias``
  where it applies, else are left as pruned; the report lists the method used per layer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.activations import ActivationStream
from onnxprune.data import Dataset
from onnxprune.output_layers import layers_before_outputs
from onnxprune.progress import Stage, stage

RIDGE = 1e-5  # relative to the mean diagonal of the Gram matrix: only a guard against singular systems
#: regularization strengths tried per layer (relative to the Gram matrix's mean diagonal), toward the prior
RIDGE_GRID = (1e-5, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: systems of more than LARGE_SYSTEM unknowns with few rows take RIDGE_LARGE without a search (each trial is a
#: large factorization: 5 s of ResNet-50's recovery); every such layer measured chose 0.3-1.0, and 0.3 was
#: within 3% of the best held-out error in each
LARGE_SYSTEM = 1024
RIDGE_LARGE = 0.3
RIDGE_AMPLE = RIDGE            # the strength when rows are ample: plain least squares
ROWS_PER_UNKNOWN_SEARCH = 16   # below this many calibration rows per unknown, the strength is searched
HELD_OUT = 0.2                 # fraction of a layer's rows that chooses its strength


class Recover(enum.Enum):
    NONE = "none"
    BIAS = "bias"
    LSQ = "lsq"


@dataclass(frozen=True)
class ConsumerFix:
    node: str
    method: str
    error_before: float | None = None  # relative L2 error of the consumer output vs the original
    error_after: float | None = None


def collect(model: onnx.ModelProto, names: list[str], data: Dataset) -> dict[str, np.ndarray]:
    """The values of ``names`` on every sample, each in its own layout (a sequence-first tensor stays (T, N, C))."""
    stream = ActivationStream(model, data)
    return {n: stream.get(n) for n in names}


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in model.graph.initializer if t.name == name), None)


def _set_init(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    """Give ``node`` a fresh initializer at ``index`` (never changes a tensor shared with other nodes)."""
    name = f"{node.name or node.output[0]}_recovered_{index}"
    existing = _init(model, name)
    if existing is not None:
        model.graph.initializer.remove(existing)
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = name


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _bias_fix(original: onnx.ModelProto, pruned: onnx.ModelProto, node: onnx.NodeProto,
              masks: tuple[np.ndarray, np.ndarray | None], x: np.ndarray) -> bool:
    """Fold the removed inputs' mean contribution into ``node``'s bias (in ``pruned``). ``x``: original input;
    ``masks``: keep-masks of the node's input positions and output channels."""
    keep, keep_out = masks
    orig_node = next(n for n in original.graph.node if n.name == node.name)
    w = numpy_helper.to_array(_init(original, orig_node.input[1]))
    drop = ~keep
    if node.op_type == "Conv":
        mean = x.mean(axis=(0, *range(2, x.ndim)))
        contribution = _dense_channel_sums(w, _attr(node, "group", 1))[:, drop] @ mean[drop].astype(np.float64)
    elif node.op_type == "Gemm":
        mean = x.reshape(-1, x.shape[-1]).mean(0)
        wt = w.T if _attr(node, "transB", 0) else w  # (K, N)
        contribution = _attr(node, "alpha", 1.0) * (mean[drop].astype(np.float64) @ wt[drop].astype(np.float64))
    else:
        return False
    if keep_out is not None:
        contribution = contribution[keep_out]
    dtype = w.dtype
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias = numpy_helper.to_array(_init(pruned, bias_name)).astype(np.float64) if bias_name else \
        np.zeros(contribution.shape[0])
    if node.op_type == "Gemm" and bias_name:
        bias = bias * _attr(node, "beta", 1.0)
        for a in node.attribute:
            if a.name == "beta":
                a.f = 1.0
    _set_init(pruned, node, 2, (np.broadcast_to(bias, np.broadcast_shapes(bias.shape, contribution.shape))
                                + contribution).astype(dtype))
    return True


def _dense_channel_sums(w: np.ndarray, group: int) -> np.ndarray:
    """(O, Cin) sums of each output's kernel over each input channel, zero across groups."""
    out, cin_g = w.shape[0], w.shape[1]
    sums = w.astype(np.float64).reshape(out, cin_g, -1).sum(-1)
    if group == 1:
        return sums
    dense = np.zeros((out, cin_g * group))
    per = out // group
    for g in range(group):
        dense[g * per:(g + 1) * per, g * cin_g:(g + 1) * cin_g] = sums[g * per:(g + 1) * per]
    return dense


def _im2col(x: np.ndarray, node: onnx.NodeProto, w_shape: tuple[int, ...], positions: np.ndarray
            ) -> np.ndarray:
    """Patches of a 2-D conv input at sampled output positions (n, oy, ox): (M, Cin * kh * kw), float64.

    Only the sampled patches are gathered (no padded or float64 copy of the whole input: it can be gigabytes);
    taps that fall in the zero padding read 0."""
    kh, kw = w_shape[2], w_shape[3]
    sy, sx = _attr(node, "strides", [1, 1])
    dy, dx = _attr(node, "dilations", [1, 1])
    pads = _attr(node, "pads", [0, 0, 0, 0])
    n, oy, ox = positions.T
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    rows = oy[:, None] * sy + ky.reshape(-1)[None, :] * dy - pads[0]
    cols = ox[:, None] * sx + kx.reshape(-1)[None, :] * dx - pads[1]
    inside = (rows >= 0) & (rows < x.shape[2]) & (cols >= 0) & (cols < x.shape[3])
    patches = x[n[:, None], :, np.clip(rows, 0, x.shape[2] - 1), np.clip(cols, 0, x.shape[3] - 1)]  # (M, K, C)
    patches = np.where(inside[:, :, None], patches, 0).astype(np.float64)
    return patches.transpose(0, 2, 1).reshape(len(n), -1)


def _ridge(a: np.ndarray, y: np.ndarray, intercept: bool = True, prior: np.ndarray | None = None) -> np.ndarray:
    """Regularized least squares ``a @ sol ~ y`` (``intercept``: the last row of ``sol`` is the bias), pulled
    toward ``prior`` (the layer's current weights, bias row included): ``min |a sol - y|^2 + lam |sol - prior|^2``.

    With few calibration rows per unknown (below :data:`ROWS_PER_UNKNOWN_SEARCH`: a late conv with many input
    channels and few positions), ``lam`` is chosen per layer on held-out rows (the last fifth: random positions
    of a conv, the last samples of a Linear; :func:`_held_out_strength`), relative to the mean diagonal of the
    Gram matrix, then the system is solved on all rows: such a layer keeps close to its own weights instead of overfitting the calibration set. With ample
    rows, plain least squares (:data:`RIDGE_AMPLE`; held-out error within a few percent of the best there)."""
    if intercept:
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    if prior is None:
        prior = np.zeros((a.shape[1], y.shape[1]))
    best = RIDGE_AMPLE
    cut = a.shape[0] - int(a.shape[0] * HELD_OUT)   # the last rows (sampled positions, or the last samples)
    if a.shape[0] < ROWS_PER_UNKNOWN_SEARCH * a.shape[1] and a.shape[1] > LARGE_SYSTEM:
        best = RIDGE_LARGE
        gram, rhs = _gram(a), a.T @ y
    elif a.shape[0] < ROWS_PER_UNKNOWN_SEARCH * a.shape[1] and min(cut, a.shape[0] - cut) >= 8:
        gram_fit, rhs_fit = _gram(a[:cut]), a[:cut].T @ y[:cut]
        best = _held_out_strength(gram_fit, rhs_fit, prior, a[cut:], y[cut:])
        gram, rhs = gram_fit + _gram(a[cut:]), rhs_fit + a[cut:].T @ y[cut:]
    else:
        gram, rhs = _gram(a), a.T @ y
    lam = best * np.trace(gram) / gram.shape[0]
    gram[np.diag_indices_from(gram)] += lam
    return np.linalg.solve(gram, rhs + lam * prior)


def _held_out_strength(gram: np.ndarray, rhs: np.ndarray, prior: np.ndarray, a_held: np.ndarray,
                       y_held: np.ndarray) -> float:
    """The strength (relative to the mean diagonal of ``gram``) with the least held-out error: the coarse grid
    :data:`RIDGE_GRID`, then the geometric midpoints beside the best of it. The trial solves run in float32
    (a choice among strengths a factor of ~3 apart does not need float64)."""
    scale = np.trace(gram) / gram.shape[0]
    g32, r32, p32 = gram.astype(np.float32), rhs.astype(np.float32), prior.astype(np.float32)
    a32, y32 = a_held.astype(np.float32), y_held.astype(np.float32)
    eye = np.eye(gram.shape[0], dtype=np.float32)
    tried: dict[float, float] = {}

    def error(rel: float) -> float:
        if rel not in tried:
            lam = np.float32(rel * scale)
            sol = np.linalg.solve(g32 + lam * eye, r32 + lam * p32)
            tried[rel] = float(np.sum((a32 @ sol - y32) ** 2))
        return tried[rel]

    best = min(RIDGE_GRID, key=error)
    for rel in (best / np.sqrt(10), best * np.sqrt(10)):
        if RIDGE_GRID[0] < rel < RIDGE_GRID[-1]:
            error(float(rel))
    return min(tried, key=tried.get)


def _gram(a: np.ndarray) -> np.ndarray:
    # in float32 when it is large (a 3x3 conv over 512 channels: ~4600 columns, 90 GFLOP in float64); the ridge
    # term dominates its rounding, and the solve stays in float64
    return (a.T @ a) if a.shape[1] < 1024 else (a.astype(np.float32).T @ a.astype(np.float32)).astype(np.float64)


def _lsq_fix(pruned: onnx.ModelProto, node: onnx.NodeProto, x: np.ndarray, y: np.ndarray,
             max_positions: int, rng: np.random.Generator, keep_out: np.ndarray | None = None
             ) -> tuple[float, float] | None:
    """Refit ``node`` (in ``pruned``) from its pruned input ``x`` to the original output ``y`` (``keep_out``: the
    output channels the pruned node still produces, when it lost some)."""
    w = numpy_helper.to_array(_init(pruned, node.input[1]))
    if node.op_type == "Conv":
        if w.ndim != 4 or x.ndim != 4:
            return None
        return _lsq_conv(pruned, node, w, x, y, max_positions, rng, keep_out)
    if keep_out is not None and node.op_type in ("Gemm", "MatMul"):
        y = np.compress(keep_out, y, axis=-1)
    if node.op_type == "Gemm" and not _attr(node, "transA", 0):
        a = x.reshape(-1, x.shape[-1]).astype(np.float64)
        target = y.reshape(-1, y.shape[-1]).astype(np.float64)
        wt = (w.T if _attr(node, "transB", 0) else w).astype(np.float64)
        c = numpy_helper.to_array(_init(pruned, node.input[2])) if len(node.input) > 2 and node.input[2] else 0.0
        before = _attr(node, "alpha", 1.0) * a @ wt + _attr(node, "beta", 1.0) * c
        bias0 = np.broadcast_to(np.asarray(c, dtype=np.float64) * _attr(node, "beta", 1.0), (target.shape[1],))
        sol = _ridge(a, target, prior=np.vstack([wt * _attr(node, "alpha", 1.0), bias0[None, :]]))
        w_new = sol[:-1].T if _attr(node, "transB", 0) else sol[:-1]
        for attr in node.attribute:
            if attr.name in ("alpha", "beta"):
                attr.f = 1.0
    elif node.op_type == "MatMul" and w.ndim == 2:
        a = x.reshape(-1, x.shape[-1]).astype(np.float64)
        target = y.reshape(-1, y.shape[-1]).astype(np.float64)
        bias_add = _bias_add_after(pruned, node, w.shape[1])
        if bias_add is None:
            sol = _ridge(a, target, intercept=False, prior=w.astype(np.float64))
            _set_init(pruned, node, 1, sol.astype(w.dtype))
            return _rel_err(a @ w.astype(np.float64), target), _rel_err(a @ sol, target)
        add, index, bias = bias_add      # the Linear's bias Add: refit it too (as a shift of the MatMul output)
        sol = _ridge(a, target, prior=np.vstack([w.astype(np.float64), np.zeros((1, w.shape[1]))]))
        _set_init(pruned, node, 1, sol[:-1].astype(w.dtype))
        _set_init(pruned, add, index, (bias.astype(np.float64) + sol[-1]).astype(bias.dtype))
        after = a @ sol[:-1] + sol[-1]
        return _rel_err(a @ w.astype(np.float64), target), _rel_err(after, target)
    else:
        return None
    after = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1) @ sol
    _set_init(pruned, node, 1, w_new.astype(w.dtype))
    _set_init(pruned, node, 2, sol[-1].astype(w.dtype))
    return _rel_err(before, target), _rel_err(after, target)


def _bias_add_after(model: onnx.ModelProto, node: onnx.NodeProto, out: int
                    ) -> tuple[onnx.NodeProto, int, np.ndarray] | None:
    """The ``Add(MatMul, bias)`` of a Linear: the MatMul's only reader, adding a constant ``(out,)`` vector
    (node, input index of the bias, its value); None otherwise."""
    readers = [n for n in model.graph.node if node.output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type != "Add" or any(o.name == node.output[0] for o in model.graph.output):
        return None
    add = readers[0]
    index = 1 - list(add.input).index(node.output[0])
    tensor = _init(model, add.input[index])
    if tensor is None:
        return None
    bias = numpy_helper.to_array(tensor)
    return (add, index, bias) if bias.shape == (out,) and np.issubdtype(bias.dtype, np.floating) else None


def _lsq_conv(pruned: onnx.ModelProto, node: onnx.NodeProto, w: np.ndarray, x: np.ndarray, y: np.ndarray,
              max_positions: int, rng: np.random.Generator, keep_out: np.ndarray | None) -> tuple[float, float]:
    """2-D Conv refit, one least-squares system per group (depthwise: one small system per channel), all on the
    same sampled output positions."""
    group = _attr(node, "group", 1)
    n, _, oh, ow = y.shape
    total = n * oh * ow
    pick = rng.choice(total, size=min(max_positions, total), replace=False)
    positions = np.stack(np.unravel_index(pick, (n, oh, ow)), axis=1)
    target = y[positions[:, 0], :, positions[:, 1], positions[:, 2]].astype(np.float64)
    if keep_out is not None:  # the original output still has the channels this layer no longer produces
        target = target[:, keep_out]
    b_old = numpy_helper.to_array(_init(pruned, node.input[2])).astype(np.float64) \
        if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
    cin_g, per = w.shape[1], w.shape[0] // group
    w_new = np.empty(w.shape, dtype=np.float64)
    b_new = np.empty(w.shape[0], dtype=np.float64)
    before = np.empty_like(target)
    after = np.empty_like(target)
    for g in range(group):
        outs = slice(g * per, (g + 1) * per)
        a = _im2col(x[:, g * cin_g:(g + 1) * cin_g], node, (per, cin_g, *w.shape[2:]), positions)
        wg = w[outs].reshape(per, -1).astype(np.float64)
        before[:, outs] = a @ wg.T + b_old[outs]
        sol = _ridge(a, target[:, outs], prior=np.vstack([wg.T, b_old[outs][None, :]]))
        after[:, outs] = a @ sol[:-1] + sol[-1]
        w_new[outs] = sol[:-1].T.reshape(per, cin_g, *w.shape[2:])
        b_new[outs] = sol[-1]
    _set_init(pruned, node, 1, w_new.astype(w.dtype))
    _set_init(pruned, node, 2, b_new.astype(w.dtype))
    return _rel_err(before, target), _rel_err(after, target)


def _rel_err(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(pred - target) / max(np.linalg.norm(target), 1e-30))


def recover(original: onnx.ModelProto, pruned: onnx.ModelProto,
            masks: dict[str, tuple[np.ndarray, np.ndarray | None]],
            data: Dataset, method: Recover, max_positions: int = 4096, seed: int = 0
            ) -> tuple[onnx.ModelProto, list[ConsumerFix]]:
    """Return a recovered copy of ``pruned``. ``masks``: consumer node name -> keep-masks of its input positions
    and output channels (from the plan, ``prune.consumer_masks``)."""
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    if method is Recover.NONE:
        return out, []
    nodes = [n for n in out.graph.node if n.name in masks and not masks[n.name][0].all()]
    fixes: list[ConsumerFix] = []
    if method is Recover.BIAS:
        with stage("recover (bias)", total=len(nodes), unit="layers") as s:
            inputs = collect(original, [n.input[0] for n in nodes], data)
            for node in nodes:
                ok = _bias_fix(original, out, node, masks[node.name], inputs[node.input[0]])
                fixes.append(ConsumerFix(node.name, "bias" if ok else "none (unsupported consumer)"))
                s.advance(node.name)
        _drop_unused_initializers(out)
        return out, fixes
    rng = np.random.default_rng(seed)
    chosen = {n.name for n in nodes}
    heads = [n for n in output_layers(out) if n.name not in chosen]
    masks = {**masks, **{n.name: (np.ones(1, bool), None) for n in heads}}
    try:
        return out, _lsq_all(original, out, nodes + heads, masks, data, max_positions, rng)
    finally:
        _drop_unused_initializers(out)


def output_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The last weighted layer (Gemm, MatMul with a constant 2-D weight) before each graph output, through bias
    Adds and data-movement or output activations: refit last, against the original's output, it corrects what
    the layers before it (attention, LayerNorm, recurrent cells: never refit) pass on."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in layers_before_outputs(model, frozenset({"Gemm", "MatMul"}))
            if len(n.input) > 1 and n.input[1] in inits]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _lsq_all(original: onnx.ModelProto, out: onnx.ModelProto, nodes: list[onnx.NodeProto],
             masks: dict[str, tuple[np.ndarray, np.ndarray | None]], data: Dataset, max_positions: int,
             rng: np.random.Generator) -> list[ConsumerFix]:
    with stage(f"recover (lsq) on {len(data)} samples", total=len(nodes), unit="layers") as s:
        return _lsq_loop(original, out, nodes, masks, data, max_positions, rng, s)


def _lsq_loop(original: onnx.ModelProto, out: onnx.ModelProto, nodes: list[onnx.NodeProto],
              masks: dict[str, tuple[np.ndarray, np.ndarray | None]], data: Dataset, max_positions: int,
              rng: np.random.Generator, progress: Stage) -> list[ConsumerFix]:
    fixes: list[ConsumerFix] = []
    masks_with_inputs = {name for name, (keep, _) in masks.items() if keep.size > 1 or not keep.all()}
    reference = ActivationStream(original, data)   # the original's tensors, computed once
    current = ActivationStream(out, data)          # the pruned model's, as the refits before each layer left it
    for node in nodes:  # topological order: each refit sees the inputs produced by the refits before it
        progress.advance(node.name, n=0)
        x = current.get(node.input[0])
        original_input = reference.get(node.input[0])
        y = reference.get(node.output[0])
        keep_out = masks[node.name][1]
        result = _lsq_fix(out, node, x, y, max_positions, rng, keep_out)
        if result is None:
            ok = _bias_fix(original, out, node, masks[node.name], original_input)
            fixes.append(ConsumerFix(node.name, "bias (lsq unsupported here)" if ok else "none"))
        else:
            fixes.append(ConsumerFix(node.name, "lsq" if node.name in masks_with_inputs else "lsq (output layer)",
                                     *result))
        progress.advance(node.name)
    return fixes
