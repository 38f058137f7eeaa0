"""Repair the declared interface (graph inputs and outputs) of an exported model, and fix its shapes.

Exporters write interfaces that ONNX Runtime runs but that mislead every tool reading the declared dims:

- a dynamic dim written as ``dim_value: -1`` (Paddle2ONNX) or ``0`` (some TensorFlow converters) instead of a
  name: data propagation then computes negative sizes and batching reads ``-1`` as a fixed batch;
- one dim_param reused for different axes (Paddle writes ``?`` for height *and* width): ONNX shape inference
  takes equal names for equal sizes, and fixing ``?`` to the height also fixes the width;
- a graph output without a type or shape (ONNX Runtime runs it, the ONNX checker refuses the file).

:func:`repair_interface` gives every such dim a name of its own (``<tensor>_dim<axis>``), and types an untyped
output from shape inference; it returns one note per repair, which the CLI prints. Rank, fixed sizes and the
names of properly named dims (``batch`` shared by an input and an output) are kept.
:func:`fix_input_shapes` makes inputs static per input and axis, never by dim_param name.
"""

from __future__ import annotations

from collections import Counter

import onnx

from onnxprune.errors import InvalidModelError, UsageError
from onnxprune.safe_inference import infer_shapes as safe_infer_shapes

#: dim_params exporters use for "unknown", not as a name shared on purpose
_ANONYMOUS = frozenset({"?", "-1", "None", "unk", "unknown", ""})


def repair_interface(model: onnx.ModelProto) -> list[str]:
    """Repair ``model``'s graph inputs and outputs in place; returns what was repaired, in words."""
    notes = _type_untyped_outputs(model)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    values = [vi for vi in (*graph.input, *graph.output) if vi.name not in inits]
    for vi in values:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        counts = Counter(d.dim_param for d in dims if d.HasField("dim_param"))
        renamed: list[str] = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value <= 0:
                renamed.append(f"axis {axis} ({d.dim_value})")
            elif d.HasField("dim_param") and (d.dim_param in _ANONYMOUS or counts[d.dim_param] > 1):
                renamed.append(f"axis {axis} ({d.dim_param!r})")
            else:
                continue
            d.dim_param = f"{vi.name}_dim{axis}"
        if renamed:
            notes.append(f"{vi.name!r}: dynamic dim(s) {', '.join(renamed)} renamed to one name per axis")
    if notes:  # intermediate shapes written with the same conventions would contradict the repaired ones
        stale = [vi for vi in graph.value_info if any(
            (d.HasField("dim_value") and d.dim_value <= 0) or (d.HasField("dim_param") and d.dim_param in _ANONYMOUS)
            for d in vi.type.tensor_type.shape.dim)]
        for vi in stale:
            graph.value_info.remove(vi)
    return notes


def _type_untyped_outputs(model: onnx.ModelProto) -> list[str]:
    untyped = [o for o in model.graph.output if not o.HasField("type") or not o.type.tensor_type.elem_type]
    if not untyped:
        return []
    from onnxprune.normalize import skeleton

    light = skeleton(model)
    names = {o.name for o in untyped}
    for o in light.graph.output:
        if o.name in names:
            o.ClearField("type")
    try:
        inferred = safe_infer_shapes(light)
    except (onnx.shape_inference.InferenceError, RuntimeError) as e:
        raise InvalidModelError(f"graph output(s) {', '.join(sorted(names))} have no type, and shape inference "
                                f"cannot tell it: {' '.join(str(e).split())[:200]}") from e
    typed = {o.name: o for o in inferred.graph.output}
    notes = []
    for o in untyped:
        t = typed.get(o.name)
        if t is None or not t.type.tensor_type.elem_type:
            raise InvalidModelError(f"graph output {o.name!r} has no type, and shape inference cannot tell it")
        o.type.CopyFrom(t.type)
        notes.append(f"graph output {o.name!r} had no type or shape: typed from shape inference")
    return notes


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs named in ``shapes`` have exactly those dims (set per input and axis),
    intermediate and output shapes inferred again from them."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {vi.name: vi for vi in out.graph.input}
    for name, shape in shapes.items():
        if name not in by_name:
            raise UsageError(f"`input_shape` names unknown input {name!r}")
        dims = by_name[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise UsageError(f"`input_shape` {name}: rank {len(shape)} given, the model's input has rank {len(dims)}")
        for axis, (d, size) in enumerate(zip(dims, shape)):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != size:
                raise UsageError(f"`input_shape` {name}: axis {axis} is fixed to {d.dim_value} in the model, "
                                 f"{size} given")
            d.dim_value = size
    del out.graph.value_info[:]
    for o in out.graph.output:
        o.type.tensor_type.ClearField("shape")
    from onnxprune.normalize import infer_shapes

    return infer_shapes(out)
