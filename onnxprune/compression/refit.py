"""Training-free refit of connection-pruned layers from calibration data (no labels needed).

Deep Compression retrains after pruning and after sharing; without training, the remaining weights of each
layer are refit instead. Layers are processed in topological order; for each coded layer:

1. its input ``x`` is computed by the model as compressed so far (earlier layers already pruned, refit and
   shared), its target ``y`` is the *original* model's output of that layer;
2. ``lsq``: the surviving weights of each output unit (one row of the weight, per group for grouped convs)
   and its bias are refit by masked ridge least squares, ``min ||A[:, S] w_S + b - y_o||``, where ``S`` are the
   positions the pruning kept — pruned positions stay zero, so the sparsity pattern is unchanged. 2-D Conv via
   im2col on at most ``max_positions`` sampled output positions; Gemm (any ``transB``; ``alpha``/``beta`` folded
   into the refit values); MatMul with a 2-D constant weight (no bias);
3. the layer is shared (``quantize``), then its bias is refit to the least-squares optimum for the shared
   weights (the mean residual per output unit; MatMul has none).

Since every layer is fit to the original's outputs on the inputs the compressed model really produces, errors
do not compound. A weight read by several layers, 1-D/3-D convs, ConvTranspose and Gemm with ``transA`` are
only shared (the report says so). ``bias`` mode skips step 2 (empirical bias correction, Nagel et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.activations import ActivationStream
from onnxprune.data import Dataset
from onnxprune.progress import Stage, stage
from onnxprune.recover import (
    RIDGE,
    Recover,
    _attr,
    _drop_unused_initializers,
    _im2col,
    _rel_err,
)

Quantize = Callable[[str, np.ndarray], np.ndarray]  # (weight name, values) -> shared values


@dataclass(frozen=True)
class LayerFit:
    layer: str
    method: str                     # lsq | bias | shared only (reason)
    error_before: float | None = None   # relative L2 error of the layer output vs the original, as pruned
    error_after: float | None = None    # ... refit, shared and re-biased


@dataclass
class _Problem:
    """One layer's calibration system in a common form: ``y[:, o] ~ a @ w[o] + b[o]`` for each unit ``o``."""

    a: np.ndarray          # (M, n) inputs (im2col patches for Conv), per group
    y: np.ndarray          # (M, units) targets
    w: np.ndarray          # (units, n) current weights (zeros = pruned)
    b: np.ndarray | None   # (units,) current bias, None: the layer has none (MatMul)


def _masked_ridge(gram: np.ndarray, rhs: np.ndarray, keep: np.ndarray, intercept: bool) -> np.ndarray:
    """Solve, for each unit o, the ridge system restricted to ``keep[o]`` (+ the intercept, the last row).
    ``gram``: (n+1, n+1) or (n, n); ``rhs``: (n(+1), units). Returns (units, n(+1))."""
    units, n = keep.shape
    out = np.zeros((units, gram.shape[0]))
    for o in range(units):
        idx = np.flatnonzero(keep[o])
        if intercept:
            idx = np.append(idx, n)
        if idx.size == 0:
            continue
        g = gram[np.ix_(idx, idx)]
        g[np.diag_indices_from(g)] += RIDGE * np.trace(g) / idx.size  # relative to this system's own scale
        out[o, idx] = np.linalg.solve(g, rhs[idx, o])
    return out


def _fit(p: _Problem) -> tuple[np.ndarray, np.ndarray | None]:
    intercept = p.b is not None
    a = np.concatenate([p.a, np.ones((p.a.shape[0], 1))], axis=1) if intercept else p.a
    sol = _masked_ridge(a.T @ a, a.T @ p.y, p.w != 0, intercept)
    return (sol[:, :-1], sol[:, -1]) if intercept else (sol, None)


def _predict(p: _Problem, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return p.a @ w.T + (b if b is not None else 0.0)


class _Layer:
    """Adapter between one ONNX layer and its ``_Problem`` s (one per conv group)."""

    def __init__(self, model: onnx.ModelProto, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> None:
        self.model, self.node, self.inits = model, node, inits
        self.weight = numpy_helper.to_array(inits[node.input[1]])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        self.bias = numpy_helper.to_array(inits[node.input[2]]) if has_bias and node.input[2] in inits else None
        self.bias_is_constant = not has_bias or node.input[2] in inits

    def unsupported(self) -> str | None:
        op, w = self.node.op_type, self.weight
        if not self.bias_is_constant:
            return "bias is not a constant"
        if op == "Conv" and w.ndim != 4:
            return f"{w.ndim - 2}-D conv"
        if op == "Gemm" and _attr(self.node, "transA", 0):
            return "Gemm with transA"
        if op == "MatMul" and w.ndim != 2:
            return "batched MatMul weight"
        if op == "Gemm" and self.bias is not None and self.bias.size not in (1, self._units()):
            return "Gemm C is not a per-output bias"
        return None

    def _units(self) -> int:
        if self.node.op_type == "Conv":
            return self.weight.shape[0]
        if self.node.op_type == "Gemm" and _attr(self.node, "transB", 0):
            return self.weight.shape[0]
        return self.weight.shape[1]

    def rows(self, w: np.ndarray) -> np.ndarray:
        """The weight as (units, inputs) in float64."""
        w = w.astype(np.float64)
        if self.node.op_type == "Conv":
            return w.reshape(w.shape[0], -1)
        if self.node.op_type == "Gemm":
            return w * _attr(self.node, "alpha", 1.0) if _attr(self.node, "transB", 0) \
                else w.T * _attr(self.node, "alpha", 1.0)
        return w.T

    def unrows(self, rows: np.ndarray) -> np.ndarray:
        """Inverse of ``rows`` once alpha is 1."""
        if self.node.op_type == "Conv":
            return rows.reshape(self.weight.shape)
        if self.node.op_type == "Gemm" and _attr(self.node, "transB", 0):
            return rows
        return rows.T

    def bias_vector(self) -> np.ndarray | None:
        if self.node.op_type == "MatMul":
            return None
        units = self._units()
        if self.bias is None:
            return np.zeros(units)
        scale = _attr(self.node, "beta", 1.0) if self.node.op_type == "Gemm" else 1.0
        return np.broadcast_to(self.bias.astype(np.float64).reshape(-1) * scale, (units,)).copy()

    def problems(self, x: np.ndarray, y: np.ndarray, max_positions: int, rng: np.random.Generator
                 ) -> list[tuple[slice, _Problem]]:
        w, b = self.rows(self.weight), self.bias_vector()
        if self.node.op_type != "Conv":
            a = x.reshape(-1, x.shape[-1]).astype(np.float64)
            t = y.reshape(-1, y.shape[-1]).astype(np.float64)
            return [(slice(0, w.shape[0]), _Problem(a, t, w, b))]
        group = _attr(self.node, "group", 1)
        n, _, oh, ow = y.shape
        pick = rng.choice(n * oh * ow, size=min(max_positions, n * oh * ow), replace=False)
        positions = np.stack(np.unravel_index(pick, (n, oh, ow)), axis=1)
        target = y[positions[:, 0], :, positions[:, 1], positions[:, 2]].astype(np.float64)
        cin_g, per = self.weight.shape[1], self.weight.shape[0] // group
        xf = x.astype(np.float64)
        out = []
        for g in range(group):
            units = slice(g * per, (g + 1) * per)
            a = _im2col(xf[:, g * cin_g:(g + 1) * cin_g], self.node, (per, cin_g, *self.weight.shape[2:]),
                        positions)
            out.append((units, _Problem(a, target[:, units], w[units], None if b is None else b[units])))
        return out

    def write(self, w_rows: np.ndarray, b: np.ndarray | None) -> None:
        """Store refit values (float64) in the layer's own initializers; alpha/beta become 1."""
        dtype = self.weight.dtype
        weight = self.inits[self.node.input[1]]
        weight.CopyFrom(numpy_helper.from_array(self.unrows(w_rows).astype(dtype), weight.name))
        for attr in self.node.attribute:
            if attr.name in ("alpha", "beta"):
                attr.f = 1.0
        if b is None:
            return
        name = f"{self.node.name or self.node.output[0]}__refit_bias"
        tensor = numpy_helper.from_array(b.astype(dtype), name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.model.graph.initializer.append(tensor)
            self.inits[name] = tensor
        while len(self.node.input) < 3:
            self.node.input.append("")
        self.node.input[2] = name


def refit(reference: onnx.ModelProto, model: onnx.ModelProto, data: Dataset, weights: set[str],
          quantize: Quantize, method: Recover = Recover.LSQ, max_positions: int = 4096, seed: int = 0,
          known: dict[str, np.ndarray] | None = None) -> list[LayerFit]:
    """Refit (``method``), share (``quantize``) and re-bias, in place, every layer of ``model`` whose weight is
    in ``weights``; ``reference`` is the model before pruning (same node and tensor names). Weights of layers that
    cannot be refit are shared as they are. Returns one entry per layer. ``known``: tensor values on ``data``
    the caller already has — a layer's output in ``reference``, or an input that ``model`` computes the same
    way (nothing upstream of it changed) — so they are not computed again."""
    known = known or {}
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes = [n for n in model.graph.node if len(n.input) > 1 and n.input[1] in weights]
    fits: list[LayerFit] = []
    shared: set[str] = set()
    candidates = []
    for node in nodes:
        layer = _Layer(model, node, inits)
        reason = "weight read by several layers" if readers[node.input[1]] > 1 else layer.unsupported()
        if reason is None and method is not Recover.NONE:
            candidates.append(layer)
        else:
            fits.append(LayerFit(node.name or node.output[0], f"shared only ({reason or 'no refit asked'})"))
    with stage(f"refit ({method.value}) and share on {len(data)} samples", total=len(candidates),
               unit="layers") as progress:
        shared |= _refit_layers(candidates, ActivationStream(model, data), ActivationStream(reference, data), known,
                                method, quantize, inits, max_positions, rng, fits, progress)
    for name in weights - shared:
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(quantize(name, numpy_helper.to_array(inits[name])), name))
    _drop_unused_initializers(model)
    return fits


def _refit_layers(candidates: list[_Layer], current: ActivationStream, reference: ActivationStream,
                  known: dict[str, np.ndarray], method: Recover, quantize: Quantize,
                  inits: dict[str, onnx.TensorProto], max_positions: int, rng: np.random.Generator,
                  fits: list[LayerFit], progress: Stage) -> set[str]:
    """Refit, share and re-bias each candidate in topological order; ``current`` streams the model's own
    tensors as the refits before each layer left them, ``reference`` the original's."""
    shared: set[str] = set()
    for layer in candidates:
        node = layer.node
        progress.advance(node.name or node.output[0], n=0)
        x = known[node.input[0]] if node.input[0] in known else current.get(node.input[0])
        y = known[node.output[0]] if node.output[0] in known else reference.get(node.output[0])
        problems = layer.problems(x, y, max_positions, rng)
        units = layer.rows(layer.weight).shape[0]
        w_fit = np.empty((units, problems[0][1].w.shape[1]))
        b_fit = None if problems[0][1].b is None else np.empty(units)
        before = []
        for sl, p in problems:
            if method is Recover.LSQ:
                w_fit[sl], b = _fit(p)
            else:
                w_fit[sl], b = p.w, p.b
            if b_fit is not None:
                b_fit[sl] = b
        layer.write(w_fit, b_fit)  # then share, then the bias that is optimal for the shared weights
        w_shared = layer.rows(quantize(node.input[1], numpy_helper.to_array(inits[node.input[1]])))
        shared.add(node.input[1])
        after = []
        for sl, p in problems:
            before.append((_predict(p, p.w, p.b), p.y))
            if b_fit is not None:
                b_fit[sl] = (p.y - p.a @ w_shared[sl].T).mean(axis=0)
            after.append((_predict(p, w_shared[sl], None if b_fit is None else b_fit[sl]), p.y))
        layer.write(w_shared, b_fit)
        fits.append(LayerFit(node.name or node.output[0], method.value, _stacked_error(before),
                             _stacked_error(after)))
        progress.advance(node.name or node.output[0])
    return shared


def _stacked_error(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return _rel_err(np.concatenate([p for p, _ in pairs], axis=1), np.concatenate([t for _, t in pairs], axis=1))
