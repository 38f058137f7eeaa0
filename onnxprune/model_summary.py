"""A read-only summary of a model: ops, interface, parameters, MACs and which BatchNorms can be folded."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import onnx

from onnxprune.channels import ChannelAnalysis, analyze
from onnxprune.flops import CostReport, count_costs
from onnxprune.graph import to_graph
from onnxprune.normalize import default_opset
from onnxprune.passes.fold_batchnorm import is_batchnorm, match
from onnxprune.verify import InputSpec, graph_inputs, resolve_input_shapes


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]


@dataclass(frozen=True)
class BatchNormInfo:
    node: str
    foldable: bool
    reason: str


@dataclass(frozen=True)
class ModelSummary:
    opset: int
    ir_version: int
    producer: str
    ops: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: int
    flops: int
    flops_input_shapes: dict[str, list[int]]
    flops_unresolved: list[str]
    layers: list[dict[str, object]]
    batchnorm: list[BatchNormInfo]
    groups: list[dict[str, object]]
    prunable_flops_fraction: float | None  # None while some layer's MACs are unresolved

    @property
    def batchnorm_foldable(self) -> int:
        return sum(b.foldable for b in self.batchnorm)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["batchnorm"] = {"total": len(self.batchnorm), "foldable": self.batchnorm_foldable,
                          "nodes": [asdict(b) for b in self.batchnorm]}
        return d


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    t = vi.type.tensor_type
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return TensorInfo(vi.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?", dims)


def batchnorm_report(model: onnx.ModelProto) -> list[BatchNormInfo]:
    graph = to_graph(model)
    out = []
    for bn in (n for n in graph.nodes if is_batchnorm(n)):
        m = match(graph, bn)
        out.append(BatchNormInfo(bn.name, not isinstance(m, str),
                                 m if isinstance(m, str) else f"into {m[0].layer.op} {m[0].layer.name!r}"))
    return out


def summarize(model: onnx.ModelProto, spec: InputSpec = InputSpec()) -> ModelSummary:
    """Summarize a normalized model; dynamic dims: batch from ``spec.batch``, others from ``spec.shapes``
    (layers whose shapes stay unknown are listed in ``flops_unresolved``)."""
    shapes = resolve_input_shapes(model, spec, default_other=None) if _all_resolvable(model, spec) \
        else _partial_shapes(model, spec)
    costs: CostReport = count_costs(model, shapes)
    analysis = analyze(model, spec.shapes)
    return ModelSummary(
        opset=default_opset(model),
        ir_version=model.ir_version,
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        ops=dict(Counter(n.op_type for n in model.graph.node).most_common()),
        inputs=[_tensor_info(vi) for vi in graph_inputs(model)],
        outputs=[_tensor_info(vi) for vi in model.graph.output],
        params=costs.params,
        flops=costs.macs,
        flops_input_shapes={k: list(v) for k, v in costs.input_shapes.items()},
        flops_unresolved=list(costs.unresolved),
        layers=[{"node": c.node, "op": c.op, "macs": c.macs} for c in costs.layers],
        batchnorm=batchnorm_report(model),
        groups=[g.to_json() for g in analysis.groups],
        prunable_flops_fraction=_prunable_fraction(analysis, costs),
    )


def _prunable_fraction(analysis: ChannelAnalysis, costs: CostReport) -> float | None:
    """Share of MACs in layers that pruning shrinks: their output channels, or the input channels they read
    (a consumer such as the second Linear of an MLP whose hidden dim is pruned), belong to a prunable group."""
    if costs.unresolved or not costs.macs:
        return None
    prunable_roots = {int(u) for g in analysis.prunable for u in g.units}
    macs = {layer.node: layer.macs or 0 for layer in costs.layers}

    def prunable(name: str) -> bool:
        layout = analysis.layouts.get(name)
        return layout is not None and any(int(r) in prunable_roots for r in analysis.roots[layout.elems[:1]])

    share = 0
    for node in analysis.graph.nodes:
        key = node.name or (node.outputs[0].name if node.outputs else "")
        if key in macs and node.outputs and node.inputs and (prunable(node.outputs[0].name)
                                                             or prunable(node.inputs[0].name)):
            share += macs[key]
    return share / costs.macs


def _all_resolvable(model: onnx.ModelProto, spec: InputSpec) -> bool:
    for vi in graph_inputs(model):
        if vi.name in spec.shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        if any(d.dim_value <= 0 for d in list(dims)[1:]):
            return False
    return True


def _partial_shapes(model: onnx.ModelProto, spec: InputSpec) -> dict[str, tuple[int, ...]]:
    """Inputs we can fix (user-given or only the batch dim dynamic); the others keep their symbolic dims."""
    fixed = {}
    for vi in graph_inputs(model):
        if vi.name in spec.shapes:
            fixed[vi.name] = spec.shapes[vi.name]
        else:
            dims = list(vi.type.tensor_type.shape.dim)
            if all(d.dim_value > 0 for d in dims[1:]):
                fixed[vi.name] = (spec.batch, *(d.dim_value for d in dims[1:]))
    return fixed
