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

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

import onnxprune
from onnxprune.compress import huffman, sparse_index
from onnxprune.compress.container import ContainerWriter, parse
from onnxprune.compress.kmeans import Init, kmeans_1d
from onnxprune.compress.refit import LayerFit, refit
from onnxprune.data import Dataset
from onnxprune.errors import InvalidModelError, UsageError
from onnxprune.io import check_model
from onnxprune.pass_infra import PassManager
from onnxprune.passes.prune_connections import PRUNABLE_OPS, ConnectionPruning, PruneConnections
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
        for name, bits in (("--conv-bits", self.conv_bits), ("--fc-bits", self.fc_bits)):
            if not 1 <= bits <= 16:
                raise UsageError(f"{name} {bits} must be in 1..16")
        for name, bits in (("--conv-index-bits", self.conv_index_bits), ("--fc-index-bits", self.fc_index_bits)):
            if not 1 <= bits <= 16:
                raise UsageError(f"{name} {bits} must be in 1..16")


@dataclass(frozen=True)
class CompressOptions:
    pruning: ConnectionPruning = field(default_factory=ConnectionPruning)
    sharing: Sharing = field(default_factory=Sharing)
    recover: Recover = Recover.NONE   # with data: lsq (refit), bias (bias correction); see compress.refit
    fold: bool = True


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
    if shared.codebook is not None and shared.indices is not None:
        gaps, values = sparse_index.encode(shared.positions, shared.indices, index_bits)
        value_stream = huffman.encode(values)
        entry["codebook"] = writer.range(shared.codebook.tobytes())
        entry["values"] = _stream_json(writer, value_stream)
        size = len(value_stream.data) + shared.codebook.nbytes
    else:
        flat = shared.decoded.reshape(-1)
        gaps, values = sparse_index.encode(shared.positions, np.arange(1, shared.positions.size + 1), index_bits)
        raw = np.zeros(values.size, dtype=flat.dtype)  # fillers hold 0
        raw[values > 0] = flat[shared.positions]
        entry["values"] = writer.range(raw.tobytes())
        size = raw.nbytes
    gap_stream = huffman.encode(gaps)
    entry["gaps"] = _stream_json(writer, gap_stream)
    entry["entries"] = int(gaps.size)
    return entry, size + len(gap_stream.data)


def compress(model: onnx.ModelProto, options: CompressOptions | None = None,
             data: Dataset | None = None) -> CompressResult:
    """Prune (``options.pruning``), refit on ``data`` (``options.recover``), share and code ``model``
    (normalized); see the module doc."""
    options = options or CompressOptions()
    if options.recover is not Recover.NONE and data is None:
        raise UsageError(f"--recover {options.recover.value} needs calibration data (--data)")
    source_bytes = model.ByteSize()
    if options.fold:
        model = onnxprune.fold(model).model
    reference = model
    if options.pruning.active:
        model = PassManager([PruneConnections(options.pruning)]).run(model).model
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
    if data is not None and options.recover is not Recover.NONE:
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


def _decode_stream(container, where: dict[str, object]) -> np.ndarray:
    stream = huffman.HuffmanStream(container.blob(where), int(where["nbits"]), tuple(where["count"]),
                                   tuple(where["symbols"]), int(where["n"]))
    return huffman.decode(stream)


@dataclass(frozen=True)
class DecodedTensor:
    name: str
    position: int
    values: np.ndarray                 # dense, as decoded
    codebook: np.ndarray | None        # shared tensors: the codebook ...
    indices: np.ndarray | None         # ... and every entry's codebook index (dense, the tensor's shape)


def decode(data: bytes, source: str = "container") -> tuple[onnx.ModelProto, list[DecodedTensor]]:
    """The graph (without the coded weights) and every coded tensor, from container bytes."""
    c = parse(data, source)
    try:
        graph = onnx.load_model_from_string(zlib.decompress(c.blob(c.header["graph"])))
        tensors = []
        for t in c.header["tensors"]:
            shape = tuple(int(d) for d in t["shape"])
            size = int(np.prod(shape, dtype=np.int64))
            dtype = np.dtype(t["dtype"])
            gaps = _decode_stream(c, t["gaps"])
            if t["bits"]:
                codebook = np.frombuffer(c.blob(t["codebook"]), dtype=dtype)
                values = _decode_stream(c, t["values"])
                positions, values = sparse_index.decode(gaps, values, size)
                indices = np.zeros(size, dtype=np.int64)
                indices[positions] = values
                dense = codebook[indices]
                tensors.append(DecodedTensor(t["name"], int(t["position"]), dense.reshape(shape), codebook,
                                             indices.reshape(shape)))
            else:
                raw = np.frombuffer(c.blob(t["values"]), dtype=dtype)
                positions, _ = sparse_index.decode(gaps, np.zeros_like(gaps), size)
                dense = np.zeros(size, dtype=dtype)
                dense[positions] = raw
                tensors.append(DecodedTensor(t["name"], int(t["position"]), dense.reshape(shape), None, None))
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
