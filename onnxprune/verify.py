"""Run models in ONNX Runtime with graph optimizations disabled and compare their outputs.

Optimizations are off on both sides on purpose: with them on, ONNX Runtime fuses BatchNorm into Conv in the
reference too, and a comparison would prove nothing about our rewrite.
"""

from __future__ import annotations

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
    """Worst disagreement over all outputs between a reference run and a candidate run."""

    max_abs_diff: float
    max_abs_reference: float
    worst_output: str

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.max_abs_reference, 1e-30)

    def within(self, rel_tol: float) -> bool:
        return self.max_abs_diff <= rel_tol * max(self.max_abs_reference, 1e-30)


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
            raise UsageError(f"--input-shape {item!r}: expected NAME=DxDx... with positive integers, "
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
        raise UsageError(f"--input-shape names unknown input(s) {', '.join(unknown)}; "
                         f"the model's inputs are {', '.join(sorted(known))}")
    resolved: dict[str, tuple[int, ...]] = {}
    for vi in graph_inputs(model):
        if vi.name in spec.shapes:
            shape = spec.shapes[vi.name]
            rank = len(vi.type.tensor_type.shape.dim)
            if vi.type.tensor_type.HasField("shape") and rank != len(shape):
                raise UsageError(f"--input-shape {vi.name}: rank {len(shape)} given, the model's input has rank {rank}")
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
                                 f"give its shape with --input-shape {vi.name}=...")
        resolved[vi.name] = tuple(dims)
    return resolved


def random_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal for floats, small non-negative integers for ints, random bools."""
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


def session_with_outputs(model: onnx.ModelProto, extra_outputs: list[str]) -> ort.InferenceSession:
    """A session (optimizations off) that also returns the named intermediate tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in extra_outputs:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return make_session(m)


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except Exception as e:
        raise VerificationError(f"ONNX Runtime failed to run the model: {' '.join(str(e).split())[:300]} "
                                f"(if an input shape is wrong, pass --input-shape)") from e


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> Comparison:
    """Max abs difference over all outputs (matched by name) and the largest reference magnitude."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise VerificationError(f"rewritten model lost output(s): {', '.join(missing)}")
    worst, worst_name, ref_max = 0.0, "", 0.0
    for name, ref in reference.items():
        got = candidate[name]
        if ref.shape != got.shape:
            raise VerificationError(f"output {name!r} changed shape: {ref.shape} -> {got.shape}")
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        diff = float(np.max(np.abs(ref64 - got64))) if ref.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf") if not np.array_equal(np.isnan(ref64), np.isnan(got64)) else 0.0
        ref_max = max(ref_max, float(np.max(np.abs(ref64[np.isfinite(ref64)]))) if ref.size else 0.0)
        if diff > worst or not worst_name:
            worst, worst_name = diff, name
    return Comparison(worst, ref_max, worst_name)


@dataclass(frozen=True)
class Reference:
    """Seeded inputs and the original model's outputs on them: computed once, compared against many times."""

    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @classmethod
    def of(cls, model: onnx.ModelProto, spec: InputSpec = InputSpec(), seed: int = 0) -> "Reference":
        feeds = random_inputs(model, resolve_input_shapes(model, spec), seed)
        return cls(feeds, run(make_session(model), feeds))

    def compare(self, model: onnx.ModelProto) -> Comparison:
        return compare(self.outputs, run(make_session(model), self.feeds))
