"""Fold constant subexpressions: every node whose inputs are all constants becomes an initializer.

Exporters compute constants with nodes: the TorchScript exporter de-duplicates equal tensors and reads the copies
through ``Identity``; Paddle2ONNX adds a conv bias as ``Reshape(bias, shape)``; a ``Linear`` on a 4-D input is
``MatMul(x, Transpose(W))`` without constant folding. Channel analysis and the folding passes read parameters
only from initializers, so these must be computed first.

Rule: a default-domain node, without subgraphs and deterministic, whose every input is an initializer (or the
output of a node folded before it), is evaluated and replaced by initializers holding its outputs:

- ``Identity`` of an initializer is not copied: its readers read the initializer itself (a shared weight is
  copied later, by whichever pass changes it for one reader only);
- everything else is evaluated by ONNX's reference implementation (:mod:`onnx.reference`).

With the inferred shapes of the model (``shapes``), the dims shape inference knows statically are constants
too: ``Shape(x)`` whose sliced dims are all static, ``Gather(Shape(x), i)`` and ``Slice(Shape(x))`` of static
dims and ``Size(x)``
become initializers (so ``x.size(1) // 2`` written out by an exporter folds to a number). Dynamic dims (batch,
height, width of a dynamic model) are never folded. Every channel rule then sees the channel count wherever it
is used as a number, and rewrites it when channels are removed (Slice bounds, Reshape targets, Split sizes).

Limits (such a node is left as it is): an output larger than :data:`MAX_GROWTH_ELEMENTS` elements that is also
larger than all of the node's inputs together (a ``ConstantOfShape`` / ``Expand`` / ``Tile`` / ``Range`` bomb
is never materialized: its size is computed from the inputs before anything is evaluated); an output whose
size cannot be bounded before evaluating; an output that is a graph output; non-tensor (sequence, optional,
string) values; ops the reference implementation does not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Above this many elements, a folded output must not be larger than its inputs together.
MAX_GROWTH_ELEMENTS = 1 << 16

_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                               "Multinomial", "Bernoulli"})
#: ops whose output never has more elements than their largest input
_NOT_GROWING = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "CastLike", "Transpose", "Slice", "Gather",
    "GatherElements", "GatherND", "Shape", "Size", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Floor",
    "Ceil", "Round", "Sign", "Relu", "Sigmoid", "Tanh", "Erf", "Not", "Clip", "ReduceMean", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ArgMax", "ArgMin",
    "Split", "Softmax", "LogSoftmax", "NonZero", "IsNaN", "IsInf", "Dropout",
})
#: elementwise ops whose output has the broadcast shape of their inputs
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less",
                           "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Where", "PRelu",
                           "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"})


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_constant_nodes` did: nodes folded, aliases resolved, and nodes left with the reason."""

    folded: int
    aliased: int
    skipped: tuple[tuple[str, str], ...]  # (node name, reason)


def fold_constant_nodes(graph: onnx.GraphProto, opset: int,
                        shapes: dict[str, list[int | None]] | None = None) -> FoldReport:
    """Fold ``graph`` (topologically sorted, Constant nodes already lifted; default-domain ``opset``) in place;
    ``shapes`` (tensor name -> dims, None where not static) also folds static dims read by Shape/Size."""
    inits = {t.name: t for t in graph.initializer}
    keep_names = {o.name for o in graph.output} | _names_read_by_subgraphs(graph)
    rename: dict[str, str] = {}
    values: dict[str, np.ndarray] = {}
    kept_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    folded = aliased = 0
    skipped: list[tuple[str, str]] = []
    shape_reads: dict[str, list[int | None]] = {}  # output of an unfolded Shape node -> the dims it returns

    def value(name: str) -> np.ndarray:
        if name not in values:
            values[name] = numpy_helper.to_array(inits[name])
        return values[name]

    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        inputs = [x for x in node.input if x]
        static = _static_shape_value(node, shapes, shape_reads, inits, value) if shapes is not None else None
        if static is not None and not any(o in keep_names for o in node.output):
            tensor = numpy_helper.from_array(static, node.output[0])
            inits[node.output[0]] = tensor
            values[node.output[0]] = static
            new_inits.append(tensor)
            folded += 1
            continue
        if not _candidate(node) or not inputs or any(x not in inits for x in inputs) \
                or any(o in keep_names for o in node.output if o):
            kept_nodes.append(node)
            continue
        if node.op_type == "Identity":
            rename[node.output[0]] = node.input[0]
            aliased += 1
            continue
        in_shapes = [tuple(inits[x].dims) if x else None for x in node.input]
        bound = _output_size_bound(node, in_shapes, value)
        in_size = sum(math.prod(s) for s in in_shapes if s is not None)
        if bound is None:
            skipped.append((node.name, f"{node.op_type}: output size unknown before evaluating"))
            kept_nodes.append(node)
            continue
        if bound > MAX_GROWTH_ELEMENTS and bound > in_size:
            skipped.append((node.name, f"{node.op_type}: would materialize {bound} elements from {in_size}"))
            kept_nodes.append(node)
            continue
        outputs = _evaluate(node, [value(x) if x else None for x in node.input], opset)
        if isinstance(outputs, str):
            skipped.append((node.name, outputs))
            kept_nodes.append(node)
            continue
        for name, arr in zip(node.output, outputs):
            if not name:
                continue
            tensor = numpy_helper.from_array(arr, name)
            inits[name] = tensor
            values[name] = arr
            new_inits.append(tensor)
        folded += 1
    if not (folded or aliased):
        return FoldReport(0, 0, tuple(skipped))
    del graph.node[:]
    graph.node.extend(_live(kept_nodes, keep_names))
    graph.initializer.extend(new_inits)
    _drop_unread_initializers(graph)
    produced_by_init = {t.name for t in graph.initializer}
    stale = [v for v in graph.value_info if v.name in produced_by_init or v.name in rename]
    for v in stale:
        graph.value_info.remove(v)
    return FoldReport(folded, aliased, tuple(skipped))


def _static_shape_value(node: onnx.NodeProto, shapes: dict[str, list[int | None]],
                        shape_reads: dict[str, list[int | None]], inits: dict, value) -> np.ndarray | None:
    """The value of a Shape / Gather(Shape) / Slice(Shape) / Size node when every dim it reads is static, else
    None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Shape", "Size") and node.input[0] not in inits:
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        if node.op_type == "Size":
            return np.asarray(math.prod(dims), dtype=np.int64) if all(d is not None for d in dims) else None
        attrs = {a.name: a.i for a in node.attribute}
        rank = len(dims)
        start, end = attrs.get("start", 0), attrs.get("end", rank)
        start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
        picked = dims[max(0, start):min(rank, end)]
        if all(d is not None for d in picked):
            return np.asarray(picked, dtype=np.int64)
        shape_reads[node.output[0]] = picked
        return None
    if node.op_type == "Slice" and node.input[0] in shape_reads and len(node.input) >= 3 \
            and all(x in inits for x in node.input[1:] if x):
        dims = shape_reads[node.input[0]]
        params = [value(x).reshape(-1) for x in node.input[1:]]
        if any(len(p) != 1 for p in params) or (len(params) > 2 and int(params[2][0]) != 0):
            return None
        step = int(params[3][0]) if len(params) > 3 else 1
        picked = dims[slice(int(params[0][0]), int(params[1][0]), step)]
        if all(d is not None for d in picked):
            return np.asarray(picked, dtype=np.int64)
        shape_reads[node.output[0]] = picked
        return None
    if node.op_type == "Gather" and node.input[0] in shape_reads and len(node.input) > 1 and node.input[1] in inits:
        dims = shape_reads[node.input[0]]
        idx = value(node.input[1])
        if idx.dtype.kind not in "iu":
            return None
        try:
            picked = [dims[int(i)] for i in idx.reshape(-1)]
        except IndexError:
            return None
        if all(d is not None for d in picked):
            return np.asarray(picked, dtype=np.int64).reshape(idx.shape)
    return None


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Inferred dims per tensor (graph inputs, value_info, outputs), None where not a known positive size."""
    out: dict[str, list[int | None]] = {}
    g = model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    return out


def _candidate(node: onnx.NodeProto) -> bool:
    return (node.domain in ("", "ai.onnx") and node.op_type not in _NONDETERMINISTIC and node.op_type != "Constant"
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute))


def _output_size_bound(node: onnx.NodeProto, shapes: list[tuple[int, ...] | None], value) -> int | None:
    """Elements of the largest output, computed from input shapes and (small) input values; None if unknown."""
    op = node.op_type
    present = [s for s in shapes if s is not None]
    if op in _NOT_GROWING:
        return max((math.prod(s) for s in present), default=1)
    if op in _BROADCASTING:
        try:
            return math.prod(np.broadcast_shapes(*present))
        except ValueError:
            return None
    if op == "Concat":
        return sum(math.prod(s) for s in present)
    if op in ("ConstantOfShape", "Expand", "Tile", "Range") or op == "MatMul":
        try:
            if op == "ConstantOfShape":
                return math.prod(int(d) for d in value(node.input[0]).reshape(-1))
            if op == "Expand":
                return math.prod(np.broadcast_shapes(shapes[0], tuple(int(d) for d in value(node.input[1]))))
            if op == "Tile":
                return math.prod(int(a) * int(r) for a, r in zip(shapes[0], value(node.input[1]).reshape(-1)))
            if op == "Range":
                start, limit, delta = (float(value(x).reshape(-1)[0]) for x in node.input[:3])
                return max(0, math.ceil((limit - start) / delta)) if delta else None
            a, b = shapes[0], shapes[1]
            if len(a) < 1 or len(b) < 1:
                return None
            m = a[-2] if len(a) > 1 else 1
            n = b[-1] if len(b) > 1 else 1
            return math.prod(np.broadcast_shapes(a[:-2], b[:-2])) * m * n
        except (ValueError, TypeError, OverflowError, IndexError):
            return None
    return None


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray] | str:
    """The node's outputs computed by onnx.reference at ``opset``, or the reason it could not be."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" if o else "" for i, o in enumerate(node.output)]
    copy = helper.make_node(node.op_type, names, outs)
    copy.attribute.extend(node.attribute)
    feeds = {n: x for n, x in zip(names, inputs) if n}
    graph = helper.make_graph(
        [copy], "fold", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), None)
                         for n, x in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:  # onnx.reference raises whatever the op's numpy code raises
        return f"{node.op_type}: cannot evaluate ({type(e).__name__})"
    arrays = []
    for r in results:
        if not isinstance(r, np.ndarray) or r.dtype == object:
            return f"{node.op_type}: output is not a tensor"
        arrays.append(r if r.flags.c_contiguous else r.copy())  # (np.ascontiguousarray makes 0-d 1-d)
    return arrays


def _live(nodes: list[onnx.NodeProto], keep: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those no graph output depends on any more (a Shape whose Gather was folded)."""
    read = set(keep)
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o and o in read for o in node.output):
            live.append(node)
            read.update(node.input)
    return live[::-1]


def subgraph_outer_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                names.update(i for i in n.input if i and i not in local)
                names.update(x for x in subgraph_outer_inputs(n) if x not in local)
    return names


def _names_read_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        names |= subgraph_outer_inputs(node)
    return names


def _drop_unread_initializers(graph: onnx.GraphProto) -> None:
    read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output} \
        | _names_read_by_subgraphs(graph) | {i.name for i in graph.input}
    unread = [t for t in graph.initializer if t.name not in read]
    for t in unread:
        graph.initializer.remove(t)
