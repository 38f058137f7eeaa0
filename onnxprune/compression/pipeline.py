"""Deep Compression (Han et al., ICLR 2016) for an ONNX model: prune connections, share weights by per-layer
k-means, Huffman-code the sparse index and the codebook indices into an ``.onnxz`` container.

Coded weights: the constant float weight (input 1) of every Conv, Gemm and MatMul whose readers are all such
layers. Conv weights use ``conv_bits`` (default 8) and ``conv_index_bits`` (8); Gemm/MatMul use ``fc_bits`` (5)
and ``fc_index_bits`` (5), as in the paper. Everything else (biases, other constants, the graph) is stored
zlib-compressed. BatchNorm is folded first (``fold``), so the coded weights are the ones that run.

Without training, ``recover`` on calibration data stands in for the paper's retraining: ``lsq`` refits each
layer's surviving weights to the original's outputs before sharing it, layer by layer (``compress.refit``).

``compress`` returns the container bytes and the *compressed model*: the float model whose weights are exactly
what ``decompress`` gives back (pruned, then replaced by their centroids), so accuracy measured on it is the
accuracy of the decompressed file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

import onnxprune
from onnxprune.compression import huffman, sparse_index
from onnxprune.compression.container import Container, ContainerWriter, parse
from onnxprune.compression.kmeans import Init, kmeans_1d
from onnxprune.compression.refit import LayerFit, refit
from onnxprune.data import Dataset
from onnxprune.errors import InvalidModelError, UsageError
from onnxprune.io import check_model
from onnxprune.limits import ensure_memory, gib, memory_budget
from onnxprune.pass_infra import PassManager
from onnxprune.passes.prune_connections import (
    PRUNABLE_OPS,
    ConnectionPruning,
    scaled,
)
from onnxprune.pipelines import connection_passes
from onnxprune.recover import Recover

CONV_OPS = ("Conv",)


@dataclass(frozen=True)
class Sharing:
    """Weight sharing and index widths; ``share=False`` stores the non-zero values as they are."""

    share: bool = True
    conv_bits: int = 8
    fc_bits: int = 5
    conv_index_bits: int = 8
    fc_index_bits: int = 5
    init: Init = Init.LINEAR
    seed: int = 0

    def __post_init__(self) -> None:
        for name, bits in (("`conv_bits`", self.conv_bits), ("`fc_bits`", self.fc_bits)):
            if not 1 <= bits <= 16:
                raise UsageError(f"{name} {bits} must be in 1..16")
        for name, bits in (("`conv_index_bits`", self.conv_index_bits), ("`fc_index_bits`", self.fc_index_bits)):
            if not 1 <= bits <= 16:
                raise UsageError(f"{name} {bits} must be in 1..16")


@dataclass(frozen=True)
class CompressOptions:
    pruning: ConnectionPruning = field(default_factory=ConnectionPruning)
    sharing: Sharing = field(default_factory=Sharing)
    recover: Recover = Recover.NONE   # with data: lsq (refit), bias (bias correction); see compress.refit
    fold: bool = True
    prune_steps: int = 1              # with retraining: reach the sparsity in this many pruned-retrained steps

    def __post_init__(self) -> None:
        if self.prune_steps < 1:
            raise UsageError(f"`prune_steps` {self.prune_steps} must be >= 1")


@dataclass(frozen=True)
class LayerReport:
    tensor: str
    layer: str
    kind: str              # conv | fc
    weights: int
    nonzero: int
    bits: int              # codebook bits (0: not shared)
    index_bits: int
    entries: int           # (gap, value) pairs, fillers included
    bytes_before: int      # dense, in the tensor's dtype
    bytes_after: int       # gaps + values (Huffman) + codebook

    @property
    def kept(self) -> float:
        return self.nonzero / max(self.weights, 1)


@dataclass(frozen=True)
class CompressResult:
    container: bytes
    model: onnx.ModelProto            # what decompress returns
    layers: tuple[LayerReport, ...]
    source_bytes: int                 # the serialized input model
    fits: tuple[LayerFit, ...] = ()   # per refit layer (with --recover)

    @property
    def ratio(self) -> float:
        return self.source_bytes / len(self.container)

    def weights_ratio(self) -> float:
        """Coded weights only, as the paper's tables count them."""
        return sum(r.bytes_before for r in self.layers) / max(sum(r.bytes_after for r in self.layers), 1)


def coded_weights(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Initializer name -> (kind, first layer name) for every weight Deep Compression codes."""
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                readers.setdefault(name, []).append(node)
    out = {}
    for name, nodes in readers.items():
        t = inits[name]
        is_float = t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
        if not is_float or not all(n.op_type in PRUNABLE_OPS and n.domain in ("", "ai.onnx") and len(n.input) > 1
                                   and n.input[1] == name and n.input[0] != name for n in nodes):
            continue
        kind = "conv" if nodes[0].op_type in CONV_OPS else "fc"
        out[name] = (kind, nodes[0].name or nodes[0].output[0])
    return out


def _stream_json(writer: ContainerWriter, stream: huffman.HuffmanStream) -> dict[str, object]:
    return {**writer.range(stream.data), "nbits": stream.nbits, "count": list(stream.count),
            "symbols": list(stream.symbols), "n": stream.length}


@dataclass(frozen=True)
class _Shared:
    """A coded weight: its non-zero positions and, when shared, the codebook (0 first) and each one's index."""

    positions: np.ndarray
    codebook: np.ndarray | None
    indices: np.ndarray | None       # into ``codebook``, >= 1
    decoded: np.ndarray              # dense, what decompress returns


def _share(w: np.ndarray, kind: str, sharing: Sharing) -> _Shared:
    flat = w.reshape(-1)
    positions = np.flatnonzero(flat)
    decoded = np.zeros_like(flat)
    if not sharing.share:
        decoded[positions] = flat[positions]
        return _Shared(positions, None, None, decoded.reshape(w.shape))
    bits = sharing.conv_bits if kind == "conv" else sharing.fc_bits
    centroids, labels = kmeans_1d(flat[positions], (1 << bits) - 1, sharing.init, sharing.seed)
    codebook = np.concatenate([[0.0], centroids]).astype(w.dtype)
    decoded[positions] = codebook[labels + 1]
    return _Shared(positions, codebook, labels + 1, decoded.reshape(w.shape))


def _encode(shared: _Shared, kind: str, sharing: Sharing, writer: ContainerWriter) -> tuple[dict[str, object], int]:
    """The tensor's header entry and its coded size in bytes."""
    bits = (sharing.conv_bits if kind == "conv" else sharing.fc_bits) if sharing.share else 0
    index_bits = sharing.conv_index_bits if kind == "conv" else sharing.fc_index_bits
    entry: dict[str, object] = {"bits": bits, "index_bits": index_bits}
    flat_size = int(shared.decoded.size)
    if shared.codebook is not None and shared.indices is not None:
        gaps, values = sparse_index.encode(shared.positions, shared.indices, index_bits, flat_size)
        value_stream = huffman.encode(values)
        entry["codebook"] = writer.range(shared.codebook.tobytes())
        entry["values"] = _stream_json(writer, value_stream)
        size = len(value_stream.data) + shared.codebook.nbytes
    else:
        flat = shared.decoded.reshape(-1)
        gaps, values = sparse_index.encode(shared.positions, np.arange(1, shared.positions.size + 1), index_bits,
                                           flat_size)
        raw = np.zeros(values.size, dtype=flat.dtype)  # fillers hold 0
        raw[values > 0] = flat[shared.positions]
        entry["values"] = writer.range(raw.tobytes())
        size = raw.nbytes
    gap_stream = huffman.encode(gaps)
    entry["gaps"] = _stream_json(writer, gap_stream)
    entry["entries"] = int(gaps.size)
    return entry, size + len(gap_stream.data)


class Retrainer(Protocol):
    """Deep Compression's retraining, supplied by :mod:`onnxprune.training` (so this module needs no PyTorch).

    ``masked``: train ``model``'s weights with every zero kept at zero, distilling ``teacher``, for ``share`` of
    the masked-phase budget.
    ``centroids``: train the codebooks of the shared weights (``ties``: name -> (codebook with 0 first, index
    array of the weight's shape); indices fixed) and the unshared tensors; return the model and the codebooks."""

    def masked(self, model: onnx.ModelProto, teacher: onnx.ModelProto, share: float = 1.0) -> onnx.ModelProto: ...

    def centroids(self, model: onnx.ModelProto, teacher: onnx.ModelProto,
                  ties: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        ...


def compress(model: onnx.ModelProto, options: CompressOptions | None = None,
             data: Dataset | None = None, retrain: Retrainer | None = None) -> CompressResult:
    """Prune (``options.pruning``), refit on ``data`` (``options.recover``), share and code ``model``
    (normalized); see the module doc. With ``retrain``: the refit is done in float, then the pruned model is
    retrained with its masks fixed, shared, and its codebooks fine-tuned (the paper's pipeline). With
    ``options.prune_steps`` K > 1 the sparsity is reached gradually, as in the paper's iterative pruning: step k
    prunes to the cubic schedule's fraction 1 - (1 - k/K)^3 of each target (Zhu & Gupta 2017), refits (with
    ``recover``) against the model just before that step, and retrains on 1/K of the masked-phase budget."""
    options = options or CompressOptions()
    if options.prune_steps > 1 and retrain is None:
        raise UsageError("`prune_steps` needs retraining (`finetune_epochs`)")
    if options.recover is not Recover.NONE and data is None:
        raise UsageError(f"`recover` {options.recover.value} needs calibration data (`data`)")
    source_bytes = model.ByteSize()
    if options.fold:
        model = onnxprune.fold(model).model
    reference = model
    steps = options.prune_steps if options.pruning.active else 1
    before_step = model             # what the last pruning step's refit restores: the model just before it
    for step in range(1, steps):
        fraction = 1.0 - (1.0 - step / steps) ** 3
        pruned = PassManager(connection_passes(scaled(options.pruning, fraction))).run(model).model
        if data is not None and options.recover is not Recover.NONE:
            refit(model, pruned, data, set(coded_weights(pruned)), lambda name, w: w, options.recover,
                  seed=options.sharing.seed)
        model = before_step = retrain.masked(pruned, reference, 1.0 / steps)  # type: ignore[union-attr]
    if options.pruning.active:
        model = PassManager(connection_passes(options.pruning)).run(model).model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    coded = coded_weights(out)
    if not coded:
        raise UsageError("no Conv/Gemm/MatMul with a constant float weight to compress")
    shares: dict[str, _Shared] = {}
    dense: dict[str, np.ndarray] = {}

    def quantize(name: str, w: np.ndarray) -> np.ndarray:
        dense[name] = w
        shares[name] = _share(w, coded[name][0], options.sharing)
        return shares[name].decoded

    fits: tuple[LayerFit, ...] = ()
    if retrain is not None:
        if data is not None and options.recover is not Recover.NONE:
            refit(before_step, out, data, set(coded), lambda name, w: w, options.recover, seed=options.sharing.seed)
        out = retrain.masked(out, reference, 1.0 / steps)
        if data is not None and options.recover is not Recover.NONE:
            # share layer by layer, each refit against the retrained float model (coarse codebooks, e.g. 4-bit
            # convs, otherwise compound: 98.4% -> 10% on VGG-16-BN digits when shared all at once)
            retrained = onnx.ModelProto()
            retrained.CopyFrom(out)
            fits = tuple(refit(retrained, out, data, set(coded), quantize, options.recover, seed=options.sharing.seed))
        else:
            for init in out.graph.initializer:
                if init.name in coded:
                    init.CopyFrom(numpy_helper.from_array(quantize(init.name, numpy_helper.to_array(init)), init.name))
        ties = {}
        for name, shared in shares.items():
            if shared.codebook is not None and shared.indices is not None:
                index = np.zeros(shared.decoded.size, np.int64)
                index[shared.positions] = shared.indices
                ties[name] = (shared.codebook, index.reshape(shared.decoded.shape))
        if ties:
            out, trained = retrain.centroids(out, reference, ties)
            for init in out.graph.initializer:
                if init.name in trained:
                    old = shares[init.name]
                    codebook = trained[init.name].astype(old.codebook.dtype)
                    decoded = codebook[ties[init.name][1]]
                    shares[init.name] = _Shared(old.positions, codebook, old.indices, decoded)
                    init.CopyFrom(numpy_helper.from_array(decoded, init.name))
    elif data is not None and options.recover is not Recover.NONE:
        fits = tuple(refit(reference, out, data, set(coded), quantize, options.recover,
                           seed=options.sharing.seed))
    else:
        for init in out.graph.initializer:
            if init.name in coded:
                init.CopyFrom(numpy_helper.from_array(quantize(init.name, numpy_helper.to_array(init)), init.name))
    writer = ContainerWriter()
    tensors, layers = [], []
    for position, init in enumerate(out.graph.initializer):
        if init.name not in coded:
            continue
        kind, layer = coded[init.name]
        w, shared = dense[init.name], shares[init.name]
        entry, size = _encode(shared, kind, options.sharing, writer)
        tensors.append({"name": init.name, "shape": list(w.shape), "dtype": w.dtype.name, "position": position,
                        "kind": kind, **entry})
        layers.append(LayerReport(init.name, layer, kind, int(w.size), int(shared.positions.size),
                                  int(entry["bits"]), int(entry["index_bits"]), int(entry["entries"]),
                                  int(w.nbytes), int(size)))
    graph_only = onnx.ModelProto()
    graph_only.CopyFrom(out)
    keep = [t for t in graph_only.graph.initializer if t.name not in coded]
    del graph_only.graph.initializer[:]
    graph_only.graph.initializer.extend(keep)
    graph = writer.range(zlib.compress(graph_only.SerializeToString(), 9))
    container = writer.finish({"producer": f"onnxprune {onnxprune.__version__}", "graph": graph,
                               "tensors": tensors})
    check_model(out, "compressed model", full_check=True)
    return CompressResult(container, out, tuple(layers), source_bytes, fits)


#: dtypes a coded tensor may have, and the largest rank accepted from a container.
CODED_DTYPES = ("float32", "float16", "float64")
MAX_RANK = 8
#: A serialized ModelProto cannot exceed 2 GiB: a graph inflating past that is not a model.
MAX_GRAPH_BYTES = 2**31 - 1


def _stream(container: Container, where: object) -> huffman.HuffmanStream:
    if not isinstance(where, dict):
        raise TypeError("a stream entry is not a mapping")
    ints = {k: where.get(k) for k in ("nbits", "n")}
    lists = {k: where.get(k) for k in ("count", "symbols")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()) or not all(
            isinstance(v, list) and len(v) <= huffman.MAX_SYMBOL and all(isinstance(x, int) for x in v)
            for v in lists.values()):
        raise ValueError("malformed stream entry")
    stream = huffman.HuffmanStream(container.blob(where), ints["nbits"], tuple(lists["count"]),
                                   tuple(lists["symbols"]), ints["n"])
    huffman.validate(stream)
    return stream


@dataclass(frozen=True)
class _TensorSpec:
    """A coded tensor as its header declares it, validated against the payload before anything is decoded."""

    name: str
    position: int
    shape: tuple[int, ...]
    size: int
    dtype: np.dtype
    index_bits: int
    gaps: huffman.HuffmanStream
    values: huffman.HuffmanStream | None      # shared: codebook indices
    codebook: bytes | None
    raw: bytes | None                         # not shared: the values themselves

    @property
    def decoded_bytes(self) -> int:
        return self.size * (self.dtype.itemsize + (8 if self.codebook is not None else 0))


def _spec(container: Container, t: object) -> _TensorSpec:
    if not isinstance(t, dict):
        raise TypeError("a tensor entry is not a mapping")
    name, shape, dtype_name, position = t.get("name"), t.get("shape"), t.get("dtype"), t.get("position")
    bits, index_bits = t.get("bits"), t.get("index_bits")
    if not isinstance(name, str) or not isinstance(position, int) or position < 0:
        raise ValueError("tensor name or position missing")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r}: shape {shape!r} is not a list of at most {MAX_RANK} sizes")
    if dtype_name not in CODED_DTYPES:
        raise ValueError(f"tensor {name!r}: dtype {dtype_name!r} is not one of {', '.join(CODED_DTYPES)}")
    if not isinstance(bits, int) or not 0 <= bits <= 16 or not isinstance(index_bits, int) \
            or not 1 <= index_bits <= 16:
        raise ValueError(f"tensor {name!r}: bits {bits!r} / index bits {index_bits!r} out of range")
    dtype = np.dtype(dtype_name)
    size = 1
    for d in shape:
        size *= d
    gaps = _stream(container, t.get("gaps"))
    if size > sparse_index.max_size(gaps.length, index_bits):
        raise ValueError(f"tensor {name!r} declares {size} elements but its index covers at most "
                         f"{sparse_index.max_size(gaps.length, index_bits)}")
    if bits:
        values = _stream(container, t.get("values"))
        codebook = container.blob(t.get("codebook"))
        if values.length != gaps.length or not 0 < len(codebook) <= (1 << bits) * dtype.itemsize \
                or len(codebook) % dtype.itemsize:
            raise ValueError(f"tensor {name!r}: codebook or values do not match its index")
        return _TensorSpec(name, position, tuple(shape), size, dtype, index_bits, gaps, values, codebook, None)
    raw = container.blob(t.get("values"))
    if len(raw) != gaps.length * dtype.itemsize:
        raise ValueError(f"tensor {name!r}: {len(raw)} bytes of values for {gaps.length} index entries")
    return _TensorSpec(name, position, tuple(shape), size, dtype, index_bits, gaps, None, None, raw)


def _decode_tensor(spec: _TensorSpec) -> DecodedTensor:
    gaps = huffman.decode(spec.gaps)
    if spec.values is not None and spec.codebook is not None:
        codebook = np.frombuffer(spec.codebook, dtype=spec.dtype)
        positions, values = sparse_index.decode(gaps, huffman.decode(spec.values), spec.size, spec.index_bits)
        indices = np.zeros(spec.size, dtype=np.int64)
        indices[positions] = values
        return DecodedTensor(spec.name, spec.position, codebook[indices].reshape(spec.shape), codebook,
                             indices.reshape(spec.shape))
    raw = np.frombuffer(spec.raw or b"", dtype=spec.dtype)
    positions, _ = sparse_index.decode(gaps, np.zeros_like(gaps), spec.size, spec.index_bits)
    dense = np.zeros(spec.size, dtype=spec.dtype)
    dense[positions] = raw
    return DecodedTensor(spec.name, spec.position, dense.reshape(spec.shape), None, None)


def _inflate(blob: bytes, source: str) -> bytes:
    """The zlib-compressed graph, inflated at most to what a model can be and this process can hold."""
    limit = min(MAX_GRAPH_BYTES, memory_budget() // 3)
    inflater = zlib.decompressobj()
    out = inflater.decompress(blob, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        if limit == MAX_GRAPH_BYTES:
            raise InvalidModelError(f"{source}: corrupt container: the graph inflates past 2 GiB, the most an ONNX "
                                    f"model can be")
        raise InvalidModelError(f"{source}: the container's graph inflates past {gib(limit)}, more than this "
                                f"process can hold (a decompression bomb?)")
    return out


@dataclass(frozen=True)
class DecodedTensor:
    name: str
    position: int
    values: np.ndarray                 # dense, as decoded
    codebook: np.ndarray | None        # shared tensors: the codebook ...
    indices: np.ndarray | None         # ... and every entry's codebook index (dense, the tensor's shape)


def decode(data: bytes, source: str = "container") -> tuple[onnx.ModelProto, list[DecodedTensor]]:
    """The graph (without the coded weights) and every coded tensor, from container bytes. Every declared size
    is validated against the payload and the memory budget before anything is allocated."""
    c = parse(data, source)
    try:
        specs = [_spec(c, t) for t in c.header["tensors"]]
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("two coded tensors share a name")
        ensure_memory(sum(s.decoded_bytes for s in specs), f"{source}: the decoded weights", InvalidModelError)
        graph = onnx.load_model_from_string(_inflate(c.blob(c.header["graph"]), source))
        tensors = [_decode_tensor(s) for s in specs]
    except (KeyError, TypeError, ValueError, IndexError, zlib.error, DecodeError) as e:
        raise InvalidModelError(f"{source}: corrupt container: {type(e).__name__}: {e}") from None
    return graph, tensors


def decompress(data: bytes, source: str = "container") -> onnx.ModelProto:
    """The compressed model back as a plain ONNX model (weights decoded, bit for bit)."""
    graph, tensors = decode(data, source)
    inits = list(graph.graph.initializer)
    for t in sorted(tensors, key=lambda t: t.position):
        inits.insert(min(t.position, len(inits)), numpy_helper.from_array(t.values, t.name))
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(inits)
    check_model(graph, source, full_check=True)
    return graph
