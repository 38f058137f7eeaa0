"""Training-free accuracy recovery after pruning, from calibration data (no labels needed).

Every *consumer* whose input lost channels (a Conv, Gemm or MatMul reading a pruned tensor) is corrected:

- ``bias``: the removed channels' mean contribution is added to the consumer's bias. For a Conv,
  ``b'[o] = b[o] + sum_{c removed} sum_{kh,kw} W[o, c, kh, kw] * E[x_c]`` with ``E[x_c]`` the mean of input channel
  c over the calibration data (after the activation that feeds the consumer; zero padding at borders is
  ignored); for a Gemm/MatMul, ``b' = b + W[removed rows]^T E[x_removed]`` per input position (so Flatten->Gemm
  works per channel x spatial position).
- ``lsq`` (He et al. 2017, ThiNet): in topological order, each consumer's remaining weights and bias are refit by
  ridge least squares so that, fed with the *pruned* model's inputs, it reproduces the *original* model's
  outputs on calibration data. Conv via im2col on at most ``max_positions`` sampled output positions (memory
  bounded); plain convs (group 1, incl. the pointwise conv after a depthwise one), Gemm and MatMul. Grouped
  consumers fall back to ``bias``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxprune.data import Dataset

RIDGE = 1e-5  # relative to the mean diagonal of the Gram matrix: only a guard against singular systems


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


def _session(model: onnx.ModelProto, extra_outputs: list[str]) -> ort.InferenceSession:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in extra_outputs:
        if name not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
            have.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _collect(model: onnx.ModelProto, names: list[str], data: Dataset, batch: int = 32) -> dict[str, np.ndarray]:
    sess = _session(model, names)
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in data.batches(batch):
        for name, value in zip(names, sess.run(names, feeds)):
            outs[name].append(value)
    return {n: np.concatenate(v) for n, v in outs.items()}


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
        if _attr(node, "group", 1) != 1:
            return False
        mean = x.mean(axis=(0, *range(2, x.ndim)))
        per_channel = w[:, drop].astype(np.float64).reshape(w.shape[0], int(drop.sum()), -1).sum(-1)  # (O, C)
        contribution = per_channel @ mean[drop].astype(np.float64)
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


def _im2col(x: np.ndarray, node: onnx.NodeProto, w_shape: tuple[int, ...], positions: np.ndarray
            ) -> np.ndarray:
    """Patches of a 2-D conv input at sampled output positions (n, oy, ox): (M, Cin * kh * kw)."""
    kh, kw = w_shape[2], w_shape[3]
    sy, sx = _attr(node, "strides", [1, 1])
    dy, dx = _attr(node, "dilations", [1, 1])
    pads = _attr(node, "pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, oy, ox = positions.T
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    rows = oy[:, None] * sy + ky.reshape(-1)[None, :] * dy
    cols = ox[:, None] * sx + kx.reshape(-1)[None, :] * dx
    patches = xp[n[:, None], :, rows, cols]          # (M, K, Cin)
    return patches.transpose(0, 2, 1).reshape(len(n), -1)


def _ridge(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    gram = a.T @ a
    lam = RIDGE * np.trace(gram) / gram.shape[0]
    gram[np.diag_indices_from(gram)] += lam
    return np.linalg.solve(gram, a.T @ y)


def _lsq_fix(pruned: onnx.ModelProto, node: onnx.NodeProto, x: np.ndarray, y: np.ndarray,
             max_positions: int, rng: np.random.Generator) -> tuple[float, float] | None:
    """Refit ``node`` (in ``pruned``) from its pruned input ``x`` to the original output ``y``."""
    w = numpy_helper.to_array(_init(pruned, node.input[1]))
    if node.op_type == "Conv":
        if _attr(node, "group", 1) != 1 or w.ndim != 4 or x.ndim != 4:
            return None
        n, _, oh, ow = y.shape
        total = n * oh * ow
        pick = rng.choice(total, size=min(max_positions, total), replace=False)
        positions = np.stack(np.unravel_index(pick, (n, oh, ow)), axis=1)
        a = _im2col(x.astype(np.float64), node, w.shape, positions)
        target = y[positions[:, 0], :, positions[:, 1], positions[:, 2]].astype(np.float64)
        b_old = numpy_helper.to_array(_init(pruned, node.input[2])) if len(node.input) > 2 and node.input[2] \
            else np.zeros(w.shape[0])
        before = a @ w.reshape(w.shape[0], -1).T.astype(np.float64) + b_old
        sol = _ridge(a, target)
        w_new = sol[:-1].T.reshape(w.shape)
    elif node.op_type == "Gemm" and not _attr(node, "transA", 0):
        a = x.reshape(-1, x.shape[-1]).astype(np.float64)
        target = y.reshape(-1, y.shape[-1]).astype(np.float64)
        wt = (w.T if _attr(node, "transB", 0) else w).astype(np.float64)
        c = numpy_helper.to_array(_init(pruned, node.input[2])) if len(node.input) > 2 and node.input[2] else 0.0
        before = _attr(node, "alpha", 1.0) * a @ wt + _attr(node, "beta", 1.0) * c
        sol = _ridge(a, target)
        w_new = sol[:-1].T if _attr(node, "transB", 0) else sol[:-1]
        for attr in node.attribute:
            if attr.name in ("alpha", "beta"):
                attr.f = 1.0
    else:
        return None
    err = lambda pred: float(np.linalg.norm(pred - target) / max(np.linalg.norm(target), 1e-30))  # noqa: E731
    after = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1) @ sol
    _set_init(pruned, node, 1, w_new.astype(w.dtype))
    _set_init(pruned, node, 2, sol[-1].astype(w.dtype))
    return err(before), err(after)


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
        inputs = _collect(original, [n.input[0] for n in nodes], data)
        for node in nodes:
            ok = _bias_fix(original, out, node, masks[node.name], inputs[node.input[0]])
            fixes.append(ConsumerFix(node.name, "bias" if ok else "none (unsupported consumer)"))
        _drop_unused_initializers(out)
        return out, fixes
    rng = np.random.default_rng(seed)
    try:
        return out, _lsq_all(original, out, nodes, masks, data, max_positions, rng)
    finally:
        _drop_unused_initializers(out)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _lsq_all(original: onnx.ModelProto, out: onnx.ModelProto, nodes: list[onnx.NodeProto],
             masks: dict[str, tuple[np.ndarray, np.ndarray | None]], data: Dataset, max_positions: int,
             rng: np.random.Generator) -> list[ConsumerFix]:
    fixes: list[ConsumerFix] = []
    targets = _collect(original, [n.output[0] for n in nodes], data)
    original_inputs = _collect(original, [n.input[0] for n in nodes], data)
    for node in nodes:  # topological order: each refit sees the inputs produced by the refits before it
        x = _collect(out, [node.input[0]], data)[node.input[0]]
        y = targets[node.output[0]]
        keep_out = masks[node.name][1]
        if keep_out is not None:
            y = np.compress(keep_out, y, axis=1)  # the original outputs of the channels this layer still has
        result = _lsq_fix(out, node, x, y, max_positions, rng)
        if result is None:
            ok = _bias_fix(original, out, node, masks[node.name], original_inputs[node.input[0]])
            fixes.append(ConsumerFix(node.name, "bias (lsq unsupported here)" if ok else "none"))
        else:
            fixes.append(ConsumerFix(node.name, "lsq", *result))
    return fixes
