"""Tensor values of a model on a dataset, computed once, segment by segment, in topological order.

Layer-by-layer recovery asks, for each layer in turn, for the input the *current* model gives it, after the layers
before it were refit. Running the whole model for every layer costs one forward pass per layer (ONNX Runtime
computes the whole graph whatever output is asked for). :class:`ActivationStream` instead keeps the values of
the tensors that later nodes still need (the *frontier*), and for each request runs only the nodes between the
frontier and the requested tensor — as a small ONNX model built from those nodes, with the frontier as its
inputs. A whole pass therefore costs about one forward pass.

Samples are run in batches, so every kept tensor must have a known *sample axis*: shape inference is run with
the inputs' first axis named, and a tensor keeps the axis where that name lands (axis 1 for a sequence-first
RNN input, for example). A tensor whose sample axis is unknown (a Reshape that merges it with another) is never
kept: what needs it later recomputes it from its producers; asked for directly, it is computed in one run over
all samples.

Contract: the model may change while the stream is used, but only in nodes the stream has not run yet (a refit
of the layer whose input was just asked for). Tensors are kept only while a node that has not run reads them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper

from onnxprune.data import Dataset
from onnxprune.safe_inference import infer_shapes
from onnxprune.verify import make_session, run

#: Samples per ONNX Runtime call: bounds the memory of a segment's intermediate tensors.
BATCH = 32
_SAMPLES = "__onnxprune_samples__"


def sample_axes(model: onnx.ModelProto, inputs: set[str]) -> dict[str, int]:
    """Tensor name -> its sample axis, for the tensors shape inference can follow from the inputs' first axis."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    for vi in probe.graph.output:  # declared output dims would hide where the sample axis lands
        vi.type.tensor_type.ClearField("shape")
    for vi in probe.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in inputs and len(dims):
            dims[0].Clear()
            dims[0].dim_param = _SAMPLES
    try:
        inferred = infer_shapes(probe)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        return {name: 0 for name in inputs}
    axes = {name: 0 for name in inputs}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = [d.dim_param for d in vi.type.tensor_type.shape.dim]
        if dims.count(_SAMPLES) == 1:
            axes[vi.name] = dims.index(_SAMPLES)
    return axes


def _along(axis: int, start: int, size: int) -> tuple[slice, ...]:
    """Index of samples ``start:start+size`` on ``axis`` (a view, not a copy)."""
    return (slice(None),) * axis + (slice(start, start + size),)


class ActivationStream:
    """Values of ``model``'s tensors on ``data``, see the module doc."""

    def __init__(self, model: onnx.ModelProto, data: Dataset, known: dict[str, np.ndarray] | None = None) -> None:
        """``known``: values of tensors of ``model`` on ``data`` the caller already has (e.g. the input of the
        only layer that differs from a model already streamed); their producers are not run."""
        self.model = model
        self.data = data
        graph = model.graph
        self._inputs = {vi.name for vi in graph.input} - {t.name for t in graph.initializer}
        self._producer: dict[str, int] = {}
        self._readers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self._producer[name] = i
            for name in node.input:
                if name:
                    self._readers[name].append(i)
        self._axis = sample_axes(model, self._inputs)  # a known value keeps the axis inferred for it
        self._values: dict[str, np.ndarray] = {**data.inputs, **(known or {})}
        self._ran: set[int] = set()
        self._outputs = {o.name for o in graph.output}

    def sample_axis(self, name: str) -> int | None:
        """The axis of ``name`` that indexes the samples (None when shape inference cannot tell)."""
        return self._axis.get(name)

    def get(self, name: str) -> np.ndarray:
        """The value of tensor ``name`` on every sample (running the nodes it needs that have not run yet)."""
        if name in self._values:
            return self._values[name]
        return self._run_segment(name)

    def _segment(self, target: str) -> list[int]:
        """Indices (topological order) of the nodes to run to produce ``target`` from the kept values."""
        needed: set[int] = set()
        stack = [target]
        while stack:
            name = stack.pop()
            if name in self._values or name not in self._producer:
                continue  # kept, a graph input, or a constant (initializers have no producer)
            i = self._producer[name]
            if i in needed:
                continue
            self._ran.discard(i)  # computed before and dropped: the model is unchanged upstream, run it again
            needed.add(i)
            stack.extend(x for x in self.model.graph.node[i].input if x)
        return sorted(needed)

    def _run_segment(self, target: str) -> np.ndarray:
        graph = self.model.graph
        nodes = self._segment(target)
        produced = {o for i in nodes for o in graph.node[i].output if o}
        read = {x for i in nodes for x in graph.node[i].input if x}
        feeds = sorted(x for x in read if x in self._values and x not in produced)
        done = self._ran | set(nodes)
        keep = sorted(o for o in produced if o in self._axis and (
            o == target or o in self._outputs or any(r not in done for r in self._readers.get(o, ()))))
        outputs = keep if target in keep else [*keep, target]
        session = make_session(self._segment_model(nodes, feeds, outputs, read), optimize=True)
        total = len(self.data)
        batchable = target in self._axis and all(x in self._axis for x in feeds)
        size = (self.data.fixed_batch or BATCH) if batchable else total  # an unknown sample axis: one run
        values: dict[str, np.ndarray] = {}
        whole: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, size):
            batch = {x: self._values[x][_along(self._axis[x], start, size)] if size < total else self._values[x]
                     for x in feeds}
            out = run(session, batch)
            for k in outputs:
                if k not in self._axis:
                    whole.setdefault(k, []).append(out[k])
                    continue
                axis = self._axis[k]
                if k not in values:  # filled in place: no list of parts concatenated (a copy) at the end
                    shape = list(out[k].shape)
                    shape[axis] = total
                    values[k] = np.empty(shape, dtype=out[k].dtype)
                values[k][_along(axis, start, out[k].shape[axis])] = out[k]
        value = values[target] if target in values else whole[target][0]
        self._values.update({k: v for k, v in values.items() if k in keep})
        self._ran = done
        self._forget()
        return value

    def _segment_model(self, nodes: list[int], feeds: list[str], outputs: list[str], read: set[str]
                       ) -> onnx.ModelProto:
        graph = self.model.graph
        inputs = []
        for x in feeds:
            shape: list[int | str] = list(self._values[x].shape)
            shape[self._axis[x]] = "n"
            inputs.append(helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(self._values[x].dtype),
                                                        shape))
        inits = [t for t in graph.initializer if t.name in read]
        g = helper.make_graph([graph.node[i] for i in nodes], "segment", inputs,
                              [helper.make_empty_tensor_value_info(o) for o in outputs], inits)
        m = helper.make_model(g, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        m.functions.extend(self.model.functions)
        return m

    def _forget(self) -> None:
        """Drop values no node that has not run reads (graph inputs are kept: recomputation starts there)."""
        for name in list(self._values):
            if name in self._inputs:
                continue
            if all(r in self._ran for r in self._readers.get(name, ())):
                del self._values[name]
