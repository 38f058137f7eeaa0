"""Measure a model's prunable layers on this machine: ``onnxprune profile``.

Rule: every Conv, ConvTranspose, Gemm and MatMul whose input or output channels belong to a prunable group is rebuilt
as a one-layer graph with the model's exact shapes and attributes and random weights, and timed with ONNX
Runtime under the target's session options (:func:`onnxprune.targets.session_options`) at each count of
:func:`~onnxprune.latency.table.channel_grid` of that axis (multiples of the target's channel block, or of its
finer unblocked multiple where no blocked kernel touches the axis's groups: :mod:`onnxprune.latency.blocking`;
the other axis full). A depthwise conv moves its input, output and groups together (one axis). The whole model
is timed too: it calibrates the sum of the layers (fused activations, the ops between layers). On CPU a layer's
time is its kernels' time from ORT's profiler, without the layout changes a one-layer graph adds around it and
without the session call; elsewhere its run's wall time less one session call that computes nothing, timed once
(every one-layer graph pays a call, the model one in all; :class:`LayerTiming`). Each point is the median of at
least ``MIN_RUNS`` runs after a warm-up, a layer's points timed interleaved (each round runs every point once, so a busy moment of a
shared machine shifts the whole curve, not one point), and is cached per (environment, layer signature).

MatMul with a 2-D constant weight is a layer too (Linear layers exported channels-last, as in ConvNeXt).
A grouped conv is timed at counts that are multiples of its group count (pruning keeps equally many channels
per group). Limits: layers whose shapes shape inference cannot resolve are not timed and treated as unchanged
by pruning; a float16 target builds float16 layer graphs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.channels.analysis import ChannelAnalysis, analyze
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.flops import tensor_shapes
from onnxprune.latency.blocking import group_multiples
from onnxprune.latency.measure import interleaved_kernel_ms, interleaved_ms
from onnxprune.latency.table import (
    Environment,
    LatencyTable,
    LayerLatency,
    MeasurementCache,
    channel_grid,
)
from onnxprune.progress import stage
from onnxprune.targets import Precision, RuntimeTarget
from onnxprune.verify import InputSpec, resolve_input_shapes

if TYPE_CHECKING:
    from onnxprune.latency.model import LatencyModel

#: Per point: at least this many runs, and runs for at least this long.
MIN_RUNS = 7
MIN_SECONDS = 0.03
#: Whole-model calibration: the model pruned uniformly at these ratios is timed with it.
CALIBRATION_RATIOS = (0.25, 0.5, 0.75)
#: The session call overhead (:func:`call_overhead_ms`): at least this many runs.
CALL_RUNS = 200
PROFILED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerShape:
    """A layer as the one-layer graph needs it: data and weight shapes, bias, attributes (``group`` apart)."""

    node: str
    op: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    bias: bool
    attrs: tuple[tuple[str, object], ...]
    group: int
    out_elems: int

    @property
    def in_channels(self) -> int:
        if self.op == "MatMul":
            return self.x[-1]
        if self.op == "Gemm":
            return self.x[0] if self._attr("transA") else self.x[1]
        return self.x[1]

    @property
    def out_channels(self) -> int:
        if self.op == "MatMul":
            return self.w[1]
        if self.op == "Gemm":
            return self.w[0] if self._attr("transB") else self.w[1]
        return self.w[1] * self.group if self.op == "ConvTranspose" else self.w[0]

    @property
    def depthwise(self) -> bool:
        return self.op == "Conv" and self.group > 1 and self.group == self.in_channels == self.out_channels

    @property
    def grouped(self) -> bool:
        return self.group > 1 and not self.depthwise

    def _attr(self, name: str) -> int:
        return int(dict(self.attrs).get(name, 0))  # type: ignore[call-overload]

    def at(self, cin: int, cout: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """(data shape, weight shape, group) with ``cin`` input and ``cout`` output channels."""
        x, w, group = list(self.x), list(self.w), self.group
        if self.op == "MatMul":
            x[-1], w[0], w[1] = cin, cin, cout
        elif self.op == "Gemm":
            x[0 if self._attr("transA") else 1] = cin
            w[1 if self._attr("transB") else 0] = cin
            w[0 if self._attr("transB") else 1] = cout
        elif self.op == "ConvTranspose":
            x[1], w[0], w[1] = cin, cin, cout // group
        else:
            group = cin if self.depthwise else group
            x[1], w[0], w[1] = cin, cout, cin // group
        return tuple(x), tuple(w), group

    def signature(self, cin: int, cout: int, precision: str) -> str:
        x, w, group = self.at(cin, cout)
        attrs = ",".join(f"{k}={v}" for k, v in self.attrs)
        return f"{self.op}|x{list(x)}|w{list(w)}|g{group}|b{int(self.bias)}|{attrs}|{precision}"


def layer_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> tuple[list[LayerShape], list[str]]:
    """The profiled layers of ``model`` at ``input_shapes``, and a note per layer left out (with the reason)."""
    shapes = tensor_shapes(model, input_shapes)
    weights = {t.name: t for t in model.graph.initializer}
    layers, notes = [], []
    for node in model.graph.node:
        if node.op_type not in PROFILED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        name = node.name or node.output[0]
        if node.op_type == "MatMul" and (node.input[1] not in weights or len(weights[node.input[1]].dims) != 2):
            continue   # a product of two activations (attention), not a layer with weights
        x = shapes.get(node.input[0])
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        y = shapes.get(node.output[0])
        if x is None or w is None or y is None:
            notes.append(f"{name}: shapes unresolved, not profiled")
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.pop("group", 1))
        attrs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in attrs.items()
                 if not isinstance(v, (bytes, onnx.TensorProto, onnx.GraphProto))}
        bias = len(node.input) > 2 and bool(node.input[2])
        layers.append(LayerShape(name, node.op_type, tuple(x), tuple(w), bias, tuple(sorted(attrs.items())), group,
                                 int(np.prod(y))))
    return layers, notes


def layer_graph(layer: LayerShape, cin: int, cout: int, precision: Precision) -> onnx.ModelProto:
    """A one-layer model: ``layer`` with ``cin``/``cout`` channels, random weights, in ``precision``."""
    x, w, group = layer.at(cin, cout)
    dtype, elem = (np.float16, TensorProto.FLOAT16) if precision is Precision.FP16 else (np.float32, TensorProto.FLOAT)
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(w) * 0.1).astype(dtype), "W")]
    inputs = ["X", "W"]
    if layer.bias:
        inits.append(numpy_helper.from_array(np.zeros(cout, dtype), "B"))
        inputs.append("B")
    attrs = dict(layer.attrs)
    if layer.op in ("Conv", "ConvTranspose"):
        attrs["group"] = group
    node = helper.make_node(layer.op, inputs, ["Y"], **attrs)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("X", elem, x)],
                              [helper.make_tensor_value_info("Y", elem, [None] * len(x))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class LayerTiming(Enum):
    """How a one-layer graph is timed. ``KERNEL`` (the default on CPU): its kernels' time from ORT's profiler,
    without the layout changes into and out of ORT's blocked format and the session call (a graph of convs stays
    blocked between them: timed with them, YOLO-C2f's first conv looked 6 us faster at 8 of 16 outputs, all of it
    its output's reorder). ``WALL`` (elsewhere: on CUDA the profiler's kernel times are launch times): the session
    run, less one session call that computes nothing (:attr:`LatencyTable.call_ms`). Measured over the zoo in two
    runs (benchmarks/bench_latency_prediction.py), kernel predicted within 10% in 342 of 400 plans with 1 thread
    and 264 of 400 with 2, wall in 326 and 255, and the kernel table's plans landed closer to their budgets."""

    KERNEL = "kernel"
    WALL = "wall"

    @classmethod
    def default(cls, target: RuntimeTarget) -> LayerTiming:
        return cls.KERNEL if target.provider == "cpu" else cls.WALL


def kernel_timing_works(target: RuntimeTarget, threads: int, cache: MeasurementCache, env: Environment) -> bool:
    """Whether ORT's profiler gives this machine's kernel times (its trace format is ORT's, not a stable API):
    the kernel time of a graph that computes nothing, cached with the layers once it was read."""
    key = f"call|Identity|x[1]|{target.precision.value}|kernel"
    if cache.get(env, key) is not None:
        return True
    ms = interleaved_kernel_ms({key: call_graph(target.precision)}, target, threads, {}, MIN_RUNS, 0.0)[key]
    if not (math.isfinite(ms) and ms > 0):
        return False
    cache.put(env, key, ms)
    return True


def time_layers(layers: dict[str, onnx.ModelProto], target: RuntimeTarget, threads: int, seconds: float,
                timing: LayerTiming) -> dict[str, float]:
    """Milliseconds of each one-layer graph, timed interleaved (see :class:`LayerTiming`)."""
    if timing is LayerTiming.KERNEL:
        return interleaved_kernel_ms(layers, target, threads, {}, MIN_RUNS, seconds)
    return interleaved_ms(layers, target, threads, {}, MIN_RUNS, seconds)[0]


def call_graph(precision: Precision) -> onnx.ModelProto:
    """A graph that computes nothing (Identity of one element): its run time is the session call alone."""
    elem = TensorProto.FLOAT16 if precision is Precision.FP16 else TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "call",
                              [helper.make_tensor_value_info("X", elem, [1])],
                              [helper.make_tensor_value_info("Y", elem, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def call_overhead_ms(target: RuntimeTarget, threads: int, cache: MeasurementCache, env: Environment) -> float:
    """Milliseconds of one session call that computes nothing, as a layer is timed (median of at least
    ``CALL_RUNS`` runs; cached with the layers): what each one-layer graph pays besides its layer."""
    key = f"call|Identity|x[1]|{target.precision.value}"
    cached = cache.get(env, key)
    if cached is not None:
        return cached
    ms, _ = interleaved_ms({key: call_graph(target.precision)}, target, threads, {}, CALL_RUNS, MIN_SECONDS)
    cache.put(env, key, ms[key])
    return ms[key]


def calibration_model(model: onnx.ModelProto, target: RuntimeTarget) -> onnx.ModelProto:
    """The model as the target runs it: float16 for a float16 target (as ``emit`` converts it)."""
    if target.precision is Precision.FP16:
        from onnxprune.emission.fp16 import to_float16
        return to_float16(model)
    return model


def prunable_axes(analysis: ChannelAnalysis) -> dict[str, tuple[bool, bool]]:
    """Node name -> (input channels prunable, output channels prunable)."""
    prunable = np.zeros(len(analysis.roots), dtype=bool)
    for g in analysis.prunable:
        prunable[g.units] = True

    def axis(tensor: str) -> bool:
        layout = analysis.layouts.get(tensor)
        return layout is not None and bool(prunable[analysis.roots[layout.elems]].any())

    return {(n.name or n.outputs[0].name): (bool(n.inputs) and axis(n.inputs[0].name), axis(n.outputs[0].name))
            for n in analysis.graph.nodes if n.op in PROFILED_OPS and n.outputs}


def axis_multiples(analysis: ChannelAnalysis, target: RuntimeTarget) -> dict[str, tuple[int, int]]:
    """Node name -> the grid multiple of its input and of its output channels: the target's block where a
    blocked kernel touches a group on that axis, its unblocked multiple otherwise (see
    :mod:`onnxprune.latency.blocking`)."""
    by_group = group_multiples(analysis, target.grid_multiple, target.loose_multiple)
    multiple = np.full(len(analysis.roots), target.loose_multiple, dtype=np.int64)
    for g in analysis.prunable:
        multiple[g.units] = by_group[g.id]

    def axis(tensor: str) -> int:
        layout = analysis.layouts.get(tensor)
        return target.grid_multiple if layout is None else int(multiple[analysis.roots[layout.elems]].max())

    return {(n.name or n.outputs[0].name): (axis(n.inputs[0].name) if n.inputs else target.grid_multiple,
                                            axis(n.outputs[0].name))
            for n in analysis.graph.nodes if n.op in PROFILED_OPS and n.outputs}


def profile_model(model: onnx.ModelProto, target: RuntimeTarget, threads: int = 1, spec: InputSpec | None = None,
                  cache: MeasurementCache | None = None, analysis: ChannelAnalysis | None = None,
                  timing: LayerTiming | None = None) -> LatencyTable:
    """The latency table of ``model`` (normalized) on ``target`` with ``threads`` threads (see the module doc);
    ``timing``: how layers are timed (default :meth:`LayerTiming.default`; kernel on CPU only)."""
    spec = spec or InputSpec()
    if timing is LayerTiming.KERNEL and target.provider != "cpu":
        raise UsageError(f"kernel timing is for the CPU provider (on {target.provider} ORT's profiler times "
                         f"kernel launches); time the layers by wall time")
    cache = cache or MeasurementCache(None)
    env = Environment.here(target.provider, threads, target.precision.value)
    fallback: list[str] = []
    timing = timing or LayerTiming.default(target)
    if timing is LayerTiming.KERNEL and not kernel_timing_works(target, threads, cache, env):
        timing = LayerTiming.WALL
        fallback.append("ONNX Runtime's profiler gave no kernel times here: layers timed by wall time, less one "
                        "session call")
    started = time.perf_counter()
    shapes = resolve_input_shapes(model, spec)
    analysis = analysis or analyze(model, spec.shapes)
    axes = prunable_axes(analysis)
    multiples = axis_multiples(analysis, target)
    layers, notes = layer_shapes(model, shapes)
    notes = fallback + notes
    plan: list[tuple[LayerShape, list[tuple[str, int, int]]]] = []
    for layer in layers:
        cin, cout = layer.in_channels, layer.out_channels
        in_axis, out_axis = axes.get(layer.node, (False, False))
        in_multiple, out_multiple = multiples.get(layer.node, (target.grid_multiple, target.grid_multiple))
        points = [("full", cin, cout)]
        if layer.depthwise and (in_axis or out_axis):
            points += [("out", c, c) for c in channel_grid(cout, out_multiple)[:-1]]
        else:   # a grouped conv keeps equally many channels per group: counts on multiples of the group count
            g = layer.group
            points += [("out", cin, c) for c in channel_grid(cout, math.lcm(out_multiple, g))[:-1]] if out_axis \
                else []
            points += [("inp", c, cout) for c in channel_grid(cin, math.lcm(in_multiple, g))[:-1]] if in_axis else []
        plan.append((layer, points))
    measured = cached = 0
    seen: dict[str, float] = {}
    out: list[LayerLatency] = []
    with stage(f"profile: {len(layers)} layers on {target.name}, {threads} thread(s)",
               total=sum(len(p) for _, p in plan), unit="points") as progress:
        for layer, points in plan:
            keys = [layer.signature(cin, cout, target.precision.value) + f"|{timing.value}"
                    for _, cin, cout in points]
            todo = {}
            for key, (_, cin, cout) in zip(keys, points):
                if key in seen or key in todo:
                    continue
                ms = cache.get(env, key)
                if ms is None:
                    todo[key] = layer_graph(layer, cin, cout, target.precision)
                else:
                    seen[key] = ms
            if todo:   # the layer's points timed interleaved: a busy moment shifts them all alike
                timed = time_layers(todo, target, threads, MIN_SECONDS * len(todo), timing)
                for key, ms in timed.items():
                    cache.put(env, key, ms)
                    seen[key] = ms
            measured += len(todo)
            cached += len(points) - len(todo)
            curves: dict[str, list[tuple[int, float]]] = {"full": [], "out": [], "inp": []}
            for key, (axis, cin, cout) in zip(keys, points):
                curves[axis].append((cout if axis == "out" else cin, seen[key]))
            progress.advance(n=len(points))
            full = curves["full"][0][1]
            cin, cout = layer.in_channels, layer.out_channels
            out.append(LayerLatency(layer.node, layer.op, cin, cout, full, layer.out_elems, layer.depthwise,
                                    tuple(curves["out"]) + (((cout, full),) if curves["out"] else ()),
                                    tuple(curves["inp"]) + (((cin, full),) if curves["inp"] else ())))
    call_ms = call_overhead_ms(target, threads, cache, env) if timing is LayerTiming.WALL else 0.0
    cache.save()
    layers_table = LatencyTable(env, shapes, 0.0, 0, tuple(out), target.name, target.grid_multiple,
                                unblocked_multiple=target.loose_multiple, call_ms=call_ms)
    calibration, model_ms, runs = _calibrate(model, analysis, layers_table, target, threads, spec, shapes, notes)
    return LatencyTable(env, shapes, model_ms, runs, tuple(out), target.name, target.grid_multiple, calibration,
                        time.perf_counter() - started, measured, cached, tuple(notes), target.loose_multiple,
                        call_ms)


def calibration_counts(analysis: ChannelAnalysis, latency: LatencyModel) -> dict[float, dict[str, int]]:
    """Per calibration ratio (``CALIBRATION_RATIOS``), each prunable group's kept count: the uniform pruning at
    that ratio, moved up to the group's next latency step."""
    from onnxprune.latency.planner import Steps
    from onnxprune.plan import block_multiple

    groups = analysis.prunable
    steps = Steps.of(latency, groups, block_multiple, 1)
    return {ratio: {g.id: steps.up(g.id, g.channels - round(ratio * g.channels)) for g in groups}
            for ratio in (CALIBRATION_RATIOS if groups else ())}


def _calibrate(model: onnx.ModelProto, analysis: ChannelAnalysis, layers: LatencyTable, target: RuntimeTarget,
               threads: int, spec: InputSpec, shapes: dict[str, tuple[int, ...]], notes: list[str]
               ) -> tuple[tuple[tuple[float, float, float], ...], float, int]:
    """The whole model and its uniform prunings at ``CALIBRATION_RATIOS`` (counts on latency steps, random
    channels: only the shapes matter), timed interleaved: (ratio, layer sum, measured ms) per variant."""
    from onnxprune.latency.model import LatencyModel
    from onnxprune.pass_infra import PassManager
    from onnxprune.pipelines import prune_passes
    from onnxprune.plan import GroupPlan, PruningPlan, select_units

    latency = LatencyModel(analysis, layers)
    groups = analysis.prunable
    by_id = {g.id: g for g in groups}
    variants: dict[str, onnx.ModelProto] = {"0": calibration_model(model, target)}
    layer_sums = {"0": latency.layers_ms(np.zeros(len(analysis.roots), dtype=bool))}
    with stage("profile: whole model and uniform prunings (calibration)"):
        for ratio, counts in calibration_counts(analysis, latency).items():
            plan = PruningPlan(tuple(GroupPlan(g.id, g.channels, select_units(g, np.ones(g.channels), counts[g.id]))
                                     for g in groups))
            try:
                pruned = PassManager(prune_passes(plan, input_shapes=spec.shapes)).run(model).model
            except OnnxPruneError as e:   # calibration is best effort: the other variants still calibrate
                notes.append(f"calibration at ratio {ratio}: not rewritten ({type(e).__name__})")
                continue
            variants[str(ratio)] = calibration_model(pruned, target)
            layer_sums[str(ratio)] = latency.layers_ms(latency.removed_for(counts, by_id))
        ms, rounds = interleaved_ms(variants, target, threads, shapes)
    points = tuple((float(k), layer_sums[k], ms[k]) for k in variants)
    return points, ms["0"], rounds
