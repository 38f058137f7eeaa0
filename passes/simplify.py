"""Simplify what exporters leave behind once constants are folded: the rewrites onnxsim/onnxslim users expect.

Constant subexpressions and static shape arithmetic are already folded when a model is loaded
(:mod:`onnxprune.constant_fold`). This pass removes what is left, each rule exact by the operator's definition
(no tolerance involved), repeated until nothing changes:

- **equal small constants** (at most :data:`MAX_SHARED_ELEMENTS` elements, same dtype, shape and bytes) become
  one tensor, so the nodes reading them become comparable;
- **common subexpressions**: two default-domain nodes with the same op, attributes and inputs become one (never
  a random op, a node with subgraphs, one writing a graph output, or a layer with weights — Conv,
  ConvTranspose, Gemm, MatMul — since each may fold its own BatchNorm and be pruned on its own);
- **no-op nodes**: ``Identity``; ``Dropout`` without a training-mode input and with its mask unused; ``Cast``
  to the dtype its input already has; ``Mul``/``Div`` by ones and ``Add``/``Sub`` of zeros, when the constant
  cannot broadcast the other operand to a larger shape and the dtypes agree;
- **Reshape to its own dims**: a Reshape (``allowzero`` 0) whose target is ``Concat`` of pieces, where every
  computed piece is ``x.shape[k]`` of the Reshape's own input placed at position k, gets the constant target
  with 0 there ("copy this dim"), e.g. ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`` becomes
  ``Reshape(x, [0, -1])``;
- **nested Concats** on one axis (the inner one read only by the outer one) become one Concat;
- **consecutive Slices** on disjoint axes, all bounds constant and the inner Slice read only by the outer one,
  become one Slice.

Limits: a rewrite that would rename a graph output is skipped (the interface never changes); ops outside the
default domain are not touched; nothing is done that needs a shape or dtype the model does not state.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from onnxprune.graph import (
    NameAllocator,
    constant_value,
    is_default_domain,
    is_graph_output,
    producer,
)
from onnxprune.pass_infra import Finding, GraphPass, PassResult

#: constants up to this many elements are de-duplicated (shape vectors, axes, scalars; never layer weights)
MAX_SHARED_ELEMENTS = 64
_MAX_ROUNDS = 8
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                               "Multinomial", "Bernoulli"})
_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv",
                     "QLinearMatMul"})


def _has_subgraph(node: gs.Node) -> bool:
    return any(isinstance(v, gs.Graph) or (isinstance(v, (list, tuple)) and any(isinstance(g, gs.Graph) for g in v))
               for v in node.attrs.values())


def _replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> bool:
    """Make every reader of ``old`` read ``new``; False (nothing changed) when ``old`` is a graph output or
    read by a node with subgraphs (which may read it by name from inside)."""
    if is_graph_output(graph, old) or any(_has_subgraph(c) for c in old.outputs):
        return False
    for reader in list(old.outputs):
        for i, t in enumerate(reader.inputs):
            if t is old:
                reader.inputs[i] = new
    return True


def _constant_key(values: np.ndarray) -> tuple:
    return values.dtype.str, values.shape, hashlib.sha1(np.ascontiguousarray(values).tobytes()).hexdigest()


def share_equal_constants(graph: gs.Graph) -> int:
    """Readers of equal small constants read one of them; returns how many inputs were redirected."""
    first: dict[tuple, gs.Constant] = {}
    changed = 0
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if not isinstance(t, gs.Constant) or t.values.size > MAX_SHARED_ELEMENTS:
                continue
            key = _constant_key(np.asarray(t.values))
            kept = first.setdefault(key, t)
            if kept is not t:
                node.inputs[i] = kept
                changed += 1
    return changed


def _attr_key(value) -> object:
    if isinstance(value, gs.Tensor):
        return ("tensor",) + _constant_key(np.asarray(value.values)) if isinstance(value, gs.Constant) else id(value)
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, np.ndarray):
        return _constant_key(value)
    return value


def merge_common_subexpressions(graph: gs.Graph) -> list[Finding]:
    """One node for each set of identical default-domain deterministic nodes (same op, attributes, inputs)."""
    seen: dict[tuple, gs.Node] = {}
    findings: list[Finding] = []
    for node in graph.nodes:
        if not node.outputs or not is_default_domain(node) or node.op in _NONDETERMINISTIC | _LAYERS \
                or _has_subgraph(node):
            continue
        key = (node.op, tuple(id(t) for t in node.inputs), len(node.outputs),
               tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))
        twin = seen.setdefault(key, node)
        if twin is node:
            continue
        if any(is_graph_output(graph, t) for t in node.outputs) or \
                any(_has_subgraph(c) for t in node.outputs for c in t.outputs):
            continue
        for mine, theirs in zip(node.outputs, twin.outputs):
            _replace_uses(graph, mine, theirs)
        node.outputs.clear()
        node.inputs.clear()
        findings.append(Finding(node.name, node.op, True, f"same as {twin.name!r}"))
    return findings


def _is_all(values: np.ndarray | None, number: float) -> bool:
    return values is not None and values.size > 0 and bool(np.all(values == number))


def _broadcast_keeps_shape(data: gs.Tensor, const: np.ndarray) -> bool:
    """True when ``data op const`` has exactly ``data``'s shape: const's rank is not larger and each of its dims
    is 1 or equals the (static) matching dim of ``data``."""
    shape = data.shape
    if shape is None or const.ndim > len(shape):
        return False
    tail = shape[len(shape) - const.ndim:] if const.ndim else []
    return all(c == 1 or (isinstance(d, int) and d == c) for c, d in zip(const.shape, tail))


def _same_dtype(a: gs.Tensor, b: gs.Tensor) -> bool:
    return a.dtype is not None and b.dtype is not None and np.dtype(a.dtype) == np.dtype(b.dtype)


def no_op_input(node: gs.Node) -> gs.Tensor | str | None:
    """The input ``node`` passes through unchanged, a reason why a candidate is not one, or None."""
    op, ins = node.op, node.inputs
    if op == "Identity" and len(ins) == 1:
        return ins[0]
    if op == "Dropout" and ins:
        if len(ins) >= 3 and ins[2].name and not _is_all(constant_value(ins[2]), 0):
            return "Dropout in training mode"
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            return "Dropout mask is read"
        return ins[0]
    if op == "Cast" and ins:
        to = node.attrs.get("to")
        if ins[0].dtype is None or to is None:
            return None
        try:
            same = np.dtype(ins[0].dtype) == np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
        except (TypeError, KeyError, ValueError):
            return None
        return ins[0] if same else None
    if op in ("Mul", "Div", "Add", "Sub") and len(ins) == 2:
        identity = 1 if op in ("Mul", "Div") else 0
        positions = (0, 1) if op in ("Mul", "Add") else (1,)
        for pos in positions:
            const = constant_value(ins[pos])
            if _is_all(const, identity):
                data = ins[1 - pos]
                if not _same_dtype(data, node.outputs[0]):
                    return None
                if not _broadcast_keeps_shape(data, const):
                    return f"{op} by {identity} would broadcast {data.name!r} to a larger shape"
                return data
    return None


def remove_no_ops(graph: gs.Graph) -> list[Finding]:
    findings: list[Finding] = []
    for node in graph.nodes:
        if not node.outputs or not is_default_domain(node):
            continue
        source = no_op_input(node)
        if source is None:
            continue
        if isinstance(source, str):
            findings.append(Finding(node.name, node.op, False, source))
            continue
        if not _replace_uses(graph, node.outputs[0], source):
            findings.append(Finding(node.name, node.op, False, "its output is a graph output"))
            continue
        node.outputs.clear()
        node.inputs.clear()
        findings.append(Finding(node.name, node.op, True, "no-op removed"))
    return findings


def _shape_dims(piece: gs.Tensor, data: gs.Tensor) -> list[int | tuple[str, int]] | None:
    """The 1-D int64 ``piece`` as a list of numbers and ``("dim", k)`` references to ``data.shape[k]``, or None
    when it is anything else. Understands Shape(data) (with start/end), Gather of it, Slice of it (step 1),
    and Unsqueeze of a scalar Gather."""
    value = constant_value(piece)
    if value is not None:
        return [int(v) for v in value.reshape(-1)] if value.ndim <= 1 else None
    node = producer(piece)
    if node is None or not is_default_domain(node):
        return None
    if node.op == "Shape" and node.inputs[0] is data:
        rank = len(data.shape) if data.shape is not None else None
        start, end = node.attrs.get("start", 0), node.attrs.get("end")
        if (start < 0 or (end is not None and end < 0)) and rank is None:
            return None
        if rank is None:
            return [("dim", k) for k in range(start, end)] if end is not None else None
        return [("dim", k) for k in range(rank)[slice(start, end)]]
    if node.op == "Unsqueeze":
        axes = node.attrs.get("axes") if len(node.inputs) < 2 else constant_value(node.inputs[1])
        if axes is None or list(np.asarray(axes).reshape(-1)) not in ([0], [-1]):
            return None
        inner = _scalar_dim(node.inputs[0], data)
        return [inner] if inner is not None else None
    if node.op == "Gather" and node.attrs.get("axis", 0) == 0:
        index = constant_value(node.inputs[1])
        dims = _shape_dims(node.inputs[0], data)
        if index is None or index.ndim != 1 or dims is None:
            return None
        n = len(dims)
        return [dims[int(i)] for i in index] if all(-n <= int(i) < n for i in index) else None
    if node.op == "Slice" and len(node.inputs) >= 3:
        dims = _shape_dims(node.inputs[0], data)
        bounds = [constant_value(t) for t in node.inputs[1:5] if t.name]
        if dims is None or any(b is None or b.size != 1 for b in bounds):
            return None
        start, end = int(bounds[0].reshape(-1)[0]), int(bounds[1].reshape(-1)[0])
        if len(bounds) > 2 and int(bounds[2].reshape(-1)[0]) not in (0, -1):
            return None
        if len(bounds) > 3 and int(bounds[3].reshape(-1)[0]) != 1:
            return None
        return dims[slice(start, end)]
    return None


def _scalar_dim(tensor: gs.Tensor, data: gs.Tensor) -> int | tuple[str, int] | None:
    value = constant_value(tensor)
    if value is not None:
        return int(value) if value.ndim == 0 else None
    node = producer(tensor)
    if node is None or node.op != "Gather" or node.attrs.get("axis", 0) != 0 or not is_default_domain(node):
        return None
    index = constant_value(node.inputs[1])
    dims = _shape_dims(node.inputs[0], data)
    if index is None or index.ndim != 0 or dims is None or not -len(dims) <= int(index) < len(dims):
        return None
    return dims[int(index)]


def reshape_target(node: gs.Node) -> np.ndarray | None:
    """The constant target equivalent to a computed Reshape target (see the module rule), or None."""
    if node.op != "Reshape" or len(node.inputs) != 2 or node.attrs.get("allowzero", 0) != 0 \
            or constant_value(node.inputs[1]) is not None:
        return None
    data, target = node.inputs
    concat = producer(target)
    pieces = list(concat.inputs) if concat is not None and concat.op == "Concat" and is_default_domain(concat) \
        else [target]
    dims: list[int | tuple[str, int]] = []
    for piece in pieces:
        got = _shape_dims(piece, data)
        if got is None:
            return None
        dims.extend(got)
    out: list[int] = []
    for position, d in enumerate(dims):
        if isinstance(d, tuple):
            if d[1] != position:
                return None
            out.append(0)
        else:
            out.append(d)
    if sum(1 for d in out if d == -1) > 1:
        return None
    return np.asarray(out, dtype=np.int64)


def constant_reshape_targets(graph: gs.Graph, names: NameAllocator) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op != "Reshape" or not node.outputs or not is_default_domain(node):
            continue
        target = reshape_target(node)
        if target is None:
            continue
        node.inputs[1] = gs.Constant(names.fresh(f"{node.name or 'reshape'}_shape"), target)
        findings.append(Finding(node.name, node.op, True, f"target computed from its own input's shape -> "
                                                           f"{target.tolist()}"))
    return findings


def _slice_params(node: gs.Node) -> tuple[np.ndarray, ...] | None:
    if node.op != "Slice" or len(node.inputs) < 4 or not node.inputs[3].name:
        return None
    values = [constant_value(t) for t in node.inputs[1:5] if t.name]
    if any(v is None or v.ndim != 1 for v in values):
        return None
    starts, ends, axes = values[:3]
    steps = values[3] if len(values) > 3 else np.ones_like(starts)
    return starts.astype(np.int64), ends.astype(np.int64), axes.astype(np.int64), steps.astype(np.int64)


def merge_slices(graph: gs.Graph, names: NameAllocator) -> list[Finding]:
    findings = []
    for outer in graph.nodes:
        if outer.op != "Slice" or not outer.outputs or not is_default_domain(outer):
            continue
        inner = producer(outer.inputs[0])
        if inner is None or inner.op != "Slice" or not is_default_domain(inner) \
                or len(inner.outputs[0].outputs) != 1 or is_graph_output(graph, inner.outputs[0]):
            continue
        a, b = _slice_params(inner), _slice_params(outer)
        rank = len(inner.inputs[0].shape) if inner.inputs[0].shape is not None else None
        if a is None or b is None or (rank is None and (np.any(a[2] < 0) or np.any(b[2] < 0))):
            continue
        axes_a = a[2] % rank if rank else a[2]
        axes_b = b[2] % rank if rank else b[2]
        if set(axes_a.tolist()) & set(axes_b.tolist()) or len(set(axes_a.tolist())) != len(axes_a):
            continue
        merged = [np.concatenate([x, y]) for x, y in zip(a, b)]
        base = outer.name or "slice"
        new_inputs = [inner.inputs[0]] + [gs.Constant(names.fresh(f"{base}_{part}"), v)
                                          for part, v in zip(("starts", "ends", "axes", "steps"), merged)]
        outer.inputs.clear()
        outer.inputs.extend(new_inputs)
        inner.outputs.clear()
        inner.inputs.clear()
        findings.append(Finding(outer.name, "Slice", True, f"merged with {inner.name!r}"))
    return findings


def flatten_concats(graph: gs.Graph) -> list[Finding]:
    """``Concat(a, Concat(b, c), d)`` on one axis, the inner Concat read only there, becomes ``Concat(a, b, c, d)``."""
    findings = []
    for outer in graph.nodes:
        if outer.op != "Concat" or not outer.outputs or not is_default_domain(outer):
            continue
        pieces: list[gs.Tensor] = []
        merged: list[gs.Node] = []
        for t in outer.inputs:
            inner = producer(t)
            if inner is not None and inner is not outer and inner.op == "Concat" and is_default_domain(inner) \
                    and inner.attrs.get("axis") == outer.attrs.get("axis") and len(t.outputs) == 1 \
                    and not is_graph_output(graph, t) and sum(x is t for x in outer.inputs) == 1:
                pieces.extend(inner.inputs)
                merged.append(inner)
            else:
                pieces.append(t)
        if not merged:
            continue
        outer.inputs.clear()
        outer.inputs.extend(pieces)
        for inner in merged:
            inner.outputs.clear()
            inner.inputs.clear()
            findings.append(Finding(outer.name, "Concat", True, f"took in {inner.name!r}"))
    return findings


class Simplify(GraphPass):
    """The exact simplifications listed in the module docstring, repeated until none applies."""

    name = "simplify"

    def call(self, graph: gs.Graph) -> PassResult:
        findings: list[Finding] = []
        names = NameAllocator(graph)
        changed_any = False
        for _ in range(_MAX_ROUNDS):
            shared = share_equal_constants(graph)
            round_findings = (remove_no_ops(graph) + merge_common_subexpressions(graph)
                              + constant_reshape_targets(graph, names) + merge_slices(graph, names)
                              + flatten_concats(graph))
            applied = [f for f in round_findings if f.applied]
            findings.extend(round_findings)
            graph.nodes = [n for n in graph.nodes if n.outputs]
            if applied:
                graph.cleanup(remove_unused_graph_inputs=False)
            changed_any |= bool(applied or shared)
            if not applied:
                break
        return PassResult(graph, changed_any, tuple(dict.fromkeys(findings)))
