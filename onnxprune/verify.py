"""Run models in ONNX Runtime with graph optimizations disabled and compare their outputs.

Optimizations are off on both sides on purpose: with them on, ONNX Runtime fuses BatchNorm into Conv in the
reference too, and a comparison would prove nothing about our rewrite.

The tolerance rule. A rewrite is exact up to float32 rounding, and rounding is relative to the magnitude of
the values computed, not of the outputs: a text detector whose sigmoid map is ~1e-5 everywhere computes logits
of ~10, so a rounding difference of 1e-7 in the map is 1e-2 of its largest value but only 1e-8 of the numbers
it came from. So every graph output reached through a saturating activation (Sigmoid, HardSigmoid, Tanh,
Softmax, Clip, Relu... possibly behind Reshape/Transpose/Flatten) is checked twice:

- at the activation's input (the *probe*, e.g. the logits): ``|diff| <= tol x max|probe|``; this is what
  catches a wrong rewrite, whose logits are off by far more than rounding;
- at the output: ``|diff| <= tol x max(max|output|, slope x max|probe|)``, ``slope`` the activation's largest
  derivative (1/4 for Sigmoid), the most that rounding of the probe can move the output.

Other outputs: ``|diff| <= tol x max|output|``. ``tol`` is a few units of float32 rounding (1e-5; 4e-3 for
float16). When the candidate has no tensor of the probe's name (an artifact optimized by ONNX Runtime), only
its outputs are compared, under the same scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import UsageError, VerificationError

#: Symbolic dims other than the leading (batch) one get this size when the user gives no --input-shape.
DEFAULT_SPATIAL = 64

_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class Comparison:
    """The worst disagreement, relative to its scale, over all outputs and probes (see the module doc)."""

    max_abs_diff: float
    max_abs_reference: float  # the scale the worst difference is measured against
    worst_output: str

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.max_abs_reference, 1e-30)

    def within(self, rel_tol: float) -> bool:
        return self.max_abs_diff <= rel_tol * max(self.max_abs_reference, 1e-30)


#: activations whose output can be tiny where their input is not, with their largest slope
SATURATING = {"Sigmoid": 0.25, "HardSigmoid": None, "Tanh": 1.0, "Softmax": 0.5, "Clip": 1.0, "Relu": 1.0,
              "Softsign": 1.0, "Erf": 1.13, "Elu": 1.0, "Selu": 1.06, "Softplus": 1.0, "HardSwish": 1.0}
_VALUE_PRESERVING = {"Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Probe:
    """The input of the saturating activation a graph output is computed with, and its largest slope."""

    output: str
    tensor: str
    op: str
    slope: float


def find_probes(model: onnx.ModelProto) -> dict[str, Probe]:
    """Per graph output reached through a saturating activation, the tensor before it (module doc)."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    graph_inputs_ = {i.name for i in model.graph.input}
    probes: dict[str, Probe] = {}
    for out in model.graph.output:
        name, slope, found = out.name, 1.0, None
        for _ in range(16):
            node = producer.get(name)
            if node is None or not node.input or node.input[0] in graph_inputs_:
                break
            if node.op_type in SATURATING and node.domain in ("", "ai.onnx"):
                op_slope = SATURATING[node.op_type]
                if op_slope is None:  # HardSigmoid: alpha (0.2 by default)
                    op_slope = next((abs(a.f) for a in node.attribute if a.name == "alpha"), 0.2)
                slope *= op_slope
                found = Probe(out.name, node.input[0], node.op_type, slope)
            elif node.op_type not in _VALUE_PRESERVING:
                break
            name = node.input[0]
        if found is not None:
            probes[out.name] = found
    return probes


@dataclass(frozen=True)
class InputSpec:
    """Concrete shapes for model inputs: ``{"input": (1, 3, 224, 224)}``; unnamed dims come from defaults."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    batch: int = 1


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` strings (the CLI's ``--input-shape``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise UsageError(f"`input_shape` {item!r}: expected NAME=DxDx... with positive integers, "
                             f"e.g. input=1x3x224x224") from None
        shapes[name] = shape
    return shapes


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def resolve_input_shapes(model: onnx.ModelProto, spec: InputSpec,
                         default_other: int | None = DEFAULT_SPATIAL) -> dict[str, tuple[int, ...]]:
    """Concrete shape for each graph input: user shapes first, then leading symbolic dim = batch, other
    symbolic dims = ``default_other`` (None: raise asking for --input-shape)."""
    known = {i.name for i in graph_inputs(model)}
    unknown = sorted(set(spec.shapes) - known)
    if unknown:
        raise UsageError(f"`input_shape` names unknown input(s) {', '.join(unknown)}; "
                         f"the model's inputs are {', '.join(sorted(known))}")
    resolved: dict[str, tuple[int, ...]] = {}
    for vi in graph_inputs(model):
        if vi.name in spec.shapes:
            shape = spec.shapes[vi.name]
            rank = len(vi.type.tensor_type.shape.dim)
            if vi.type.tensor_type.HasField("shape") and rank != len(shape):
                raise UsageError(f"`input_shape` {vi.name}: rank {len(shape)} given, the model's input has rank {rank}")
            resolved[vi.name] = shape
            continue
        dims: list[int] = []
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            elif axis == 0:
                dims.append(spec.batch)
            elif default_other is not None:
                dims.append(default_other)
            else:
                raise UsageError(f"input {vi.name!r} has a dynamic dim {d.dim_param or '?'} at axis {axis}; "
                                 f"give its shape with `input_shape` {vi.name}=...")
        resolved[vi.name] = tuple(dims)
    return resolved


def with_batch(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], batch: int) -> dict[str, tuple[int, ...]]:
    """``shapes`` with the leading dim set to ``batch`` for every input whose leading dim is dynamic (a model
    exported with a fixed batch keeps its own)."""
    out = dict(shapes)
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if vi.name in out and dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            out[vi.name] = (batch, *out[vi.name][1:])
    return out


def random_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal for floats, small non-negative integers for ints, random bools."""
    from onnxprune.limits import ensure_memory

    elements = sum(math.prod(shapes[vi.name]) for vi in graph_inputs(model))
    shown = ", ".join(f"{vi.name}={'x'.join(map(str, shapes[vi.name]))}" for vi in graph_inputs(model))
    ensure_memory(elements * 8, f"random inputs at {shown}", copies=3)  # drawn in float64, then cast
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        dtype = _ONNX_TO_NUMPY.get(vi.type.tensor_type.elem_type, np.float32)
        shape = shapes[vi.name]
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 4, size=shape).astype(dtype)
    return feeds


def make_session(model: onnx.ModelProto | str, *, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    """An ORT CPU session; ``optimize=False`` disables every graph optimization."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    source = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise VerificationError(f"ONNX Runtime cannot load the model: {' '.join(str(e).split())[:300]}") from e


def session_with_outputs(model: onnx.ModelProto, extra_outputs: list[str], *,
                         optimize: bool = False) -> ort.InferenceSession:
    """A session (optimizations off unless ``optimize``) that also returns the named intermediate tensors."""
    have = {o.name for o in model.graph.output}
    if all(name in have for name in extra_outputs):
        return make_session(model, optimize=optimize)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in extra_outputs:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return make_session(m, optimize=optimize)


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except Exception as e:
        raise VerificationError(f"ONNX Runtime failed to run the model: {' '.join(str(e).split())[:300]} "
                                f"(if an input shape is wrong, pass `input_shape`)") from e


def _max_abs(x: np.ndarray) -> float:
    finite = np.abs(x[np.isfinite(x)]) if x.size else x
    return float(finite.max()) if finite.size else 0.0


def _diff(ref: np.ndarray, got: np.ndarray, name: str) -> float:
    if ref.shape != got.shape:
        raise VerificationError(f"output {name!r} changed shape: {ref.shape} -> {got.shape}")
    if not ref.size:
        return 0.0
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = float(np.max(np.abs(ref64 - got64)))
    if not np.isfinite(diff):
        diff = float("inf") if not np.array_equal(np.isnan(ref64), np.isnan(got64)) else 0.0
    return diff


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            probes: dict[str, tuple[Probe, np.ndarray, np.ndarray | None]] | None = None) -> Comparison:
    """Worst difference relative to its scale over all outputs (matched by name), and over ``probes``
    (output -> (probe, reference values, candidate values or None)) by the module doc's rule."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise VerificationError(f"rewritten model lost output(s): {', '.join(missing)}")
    probes = probes or {}
    entries: list[tuple[float, float, str]] = []  # (diff, scale, name)
    for name, ref in reference.items():
        scale = _max_abs(ref)
        if name in probes:
            probe, ref_probe, got_probe = probes[name]
            probe_scale = _max_abs(ref_probe)
            scale = max(scale, probe.slope * probe_scale)
            if got_probe is not None:
                entries.append((_diff(ref_probe, got_probe, probe.tensor), probe_scale,
                                f"{name} (at the input of its {probe.op})"))
        entries.append((_diff(ref, candidate[name], name), scale, name))
    worst = max(entries, key=lambda e: (e[0] / max(e[1], 1e-30), e[0]), default=(0.0, 0.0, ""))
    return Comparison(*worst)


@dataclass(frozen=True)
class Reference:
    """Seeded inputs and the original model's outputs (and probes) on them: computed once, compared against
    many times."""

    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    probes: dict[str, tuple[Probe, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: onnx.ModelProto, spec: InputSpec = InputSpec(), seed: int = 0) -> "Reference":
        return cls.on(model, random_inputs(model, resolve_input_shapes(model, spec), seed))

    @classmethod
    def on(cls, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> "Reference":
        found = find_probes(model)
        names = [o.name for o in model.graph.output]
        results = run(session_with_outputs(model, [p.tensor for p in found.values()]), feeds)
        return cls(feeds, {n: results[n] for n in names}, {o: (p, results[p.tensor]) for o, p in found.items()})

    def compare(self, model: onnx.ModelProto) -> Comparison:
        """Compare ``model`` run with optimizations off, its probes included when it has those tensors."""
        produced = {o for n in model.graph.node for o in n.output}
        extra = [p.tensor for p, _ in self.probes.values() if p.tensor in produced]
        results = run(session_with_outputs(model, extra), self.feeds)
        return self.compare_results(results)

    def compare_results(self, results: dict[str, np.ndarray]) -> Comparison:
        """Compare a candidate's results (outputs, plus probe tensors by name where it has them)."""
        probes = {o: (p, ref, results.get(p.tensor)) for o, (p, ref) in self.probes.items()}
        return compare(self.outputs, {k: v for k, v in results.items() if k in self.outputs}, probes)
