"""Tensor values of a model on a dataset, computed once, segment by segment, in topological order.

Layer-by-layer recovery asks, for each layer in turn, for the input the *current* model gives it, after the layers
before it were refit. Running the whole model for every layer costs one forward pass per layer (ONNX Runtime
computes the whole graph whatever output is asked for). :class:`ActivationStream` instead keeps the values of
the tensors that later nodes still need (the *frontier*), and for each request runs only the nodes between the
frontier and the requested tensor — as a small ONNX model built from those nodes, with the frontier as its
inputs. A whole pass therefore costs about one forward pass.

Contract: the model may change while the stream is used, but only in nodes the stream has not run yet (a refit
of the layer whose input was just asked for). Tensors are kept only while a node that has not run reads them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper

from onnxprune.data import Dataset
from onnxprune.verify import make_session, run

#: Samples per ONNX Runtime call: bounds the memory of a segment's intermediate tensors.
BATCH = 32


class ActivationStream:
    """Values of ``model``'s tensors on ``data`` (sample axis first), see the module doc."""

    def __init__(self, model: onnx.ModelProto, data: Dataset, known: dict[str, np.ndarray] | None = None) -> None:
        """``known``: values of tensors of ``model`` on ``data`` the caller already has (e.g. the input of the
        only layer that differs from a model already streamed); the nodes that produce them are not run."""
        self.model = model
        self.data = data
        graph = model.graph
        self._inputs = {vi.name for vi in graph.input}
        self._constants = {t.name for t in graph.initializer}
        self._producer: dict[str, int] = {}
        self._readers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self._producer[name] = i
            for name in node.input:
                if name:
                    self._readers[name].append(i)
        self._values: dict[str, np.ndarray] = {**data.inputs, **(known or {})}
        self._ran: set[int] = set()
        self._outputs = {o.name for o in graph.output}

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
            if name in self._values or name in self._constants or name not in self._producer:
                continue
            i = self._producer[name]
            if i in needed:
                continue
            if i in self._ran:  # computed before and dropped: the model is unchanged upstream, run it again
                self._ran.discard(i)
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
        keep = sorted(o for o in produced if o == target or o in self._outputs
                      or any(r not in done for r in self._readers.get(o, ())))
        segment = self._segment_model(nodes, feeds, keep, read)
        session = make_session(segment, optimize=True)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        size = self.data.fixed_batch or BATCH
        for start in range(0, len(self.data), size):
            batch = {x: self._values[x][start:start + size] for x in feeds}
            out = run(session, batch)
            for k in keep:
                parts[k].append(out[k])
        for k in keep:
            self._values[k] = np.concatenate(parts[k])
        value = self._values[target]
        self._ran = done
        self._forget()
        return value

    def _segment_model(self, nodes: list[int], feeds: list[str], outputs: list[str], read: set[str]
                       ) -> onnx.ModelProto:
        graph = self.model.graph
        inputs = [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(self._values[x].dtype),
                                                ["n", *self._values[x].shape[1:]]) for x in feeds]
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

    def release(self, name: str) -> None:
        """The caller is done with ``name`` (its value may be dropped once nothing that has not run reads it)."""
        if name in self._values and name not in self._inputs and all(r in self._ran
                                                                      for r in self._readers.get(name, ())):
            del self._values[name]
