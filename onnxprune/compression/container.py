"""The ``.onnxz`` container: an ONNX graph plus Deep-Compression-coded weights, versioned and checksummed.

Layout (all integers little-endian)::

    magic    8 bytes  b"ONNXPRZ\\0"
    version  u32      FORMAT_VERSION
    hlen     u64      length of the header
    header   hlen     JSON (UTF-8), described below
    payload  ...      the byte ranges the header points to
    digest   32 bytes SHA-256 of everything before it

Header: ``{"format": 1, "producer": "onnxprune X", "graph": RANGE, "tensors": [TENSOR...]}``, where RANGE is
``{"offset": o, "length": n}`` into the payload. ``graph`` is the zlib-compressed ModelProto with the coded
weights removed from its initializers (everything else, biases included, stays in it). Each TENSOR:

- ``name``, ``shape``, ``dtype`` (``float32``...), ``position`` (its index among the initializers), ``kind``
  (``conv`` / ``fc``), ``bits`` (codebook bits; 0 = not shared) and ``index_bits``;
- ``codebook``: RANGE of ``2**bits`` values of ``dtype`` (entry 0 is 0.0, used by filler entries), when shared;
- ``gaps`` and ``values``: Huffman streams ``{"offset", "length", "nbits", "count", "symbols", "n"}``
  (canonical table: codes per length, symbols in order) of the relative sparse index and of the codebook
  indices; a non-shared tensor stores ``values`` as RANGE of raw ``dtype`` values instead.

Reading checks the magic, version, sizes and digest before anything is decoded, so a corrupt or truncated
file is a clear error, never a wrong model. The SHA-256 digest is an integrity check against corruption, not
authentication: anyone can write a container with a valid digest. Untrusted containers are therefore decoded
within limits (``compress.pipeline.decode``): every size the header declares is checked against the payload and
against the memory this process can use before anything is allocated, and the graph's decompression is capped.

Format 2 (this version) differs from 1 in that the sparse index covers each tensor to its end, which is what
lets a reader bound a tensor's size by its payload (``sparse_index.max_size``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from onnxprune.errors import InvalidModelError

MAGIC = b"ONNXPRZ\x00"
FORMAT_VERSION = 2
#: A header larger than this is not one onnxprune wrote (a few hundred bytes per tensor).
MAX_HEADER_BYTES = 64 << 20
_HEAD = struct.Struct("<8sIQ")
DIGEST = 32


@dataclass
class ContainerWriter:
    """Collects payload blobs; ``range`` appends one and returns where it is."""

    payload: bytearray = field(default_factory=bytearray)

    def range(self, blob: bytes) -> dict[str, int]:
        offset = len(self.payload)
        self.payload += blob
        return {"offset": offset, "length": len(blob)}

    def finish(self, header: dict[str, object]) -> bytes:
        head = json.dumps({"format": FORMAT_VERSION, **header}, separators=(",", ":")).encode()
        body = _HEAD.pack(MAGIC, FORMAT_VERSION, len(head)) + head + bytes(self.payload)
        return body + hashlib.sha256(body).digest()


@dataclass(frozen=True)
class Container:
    header: dict[str, object]
    payload: memoryview

    def blob(self, where: dict[str, int]) -> bytes:
        start, length = _int(where, "offset"), _int(where, "length")
        if start < 0 or length < 0 or start + length > len(self.payload):
            raise InvalidModelError(f"corrupt container: a range ({start}+{length}) runs past the payload")
        return bytes(self.payload[start:start + length])


def parse(data: bytes, source: str) -> Container:
    if len(data) < _HEAD.size + DIGEST:
        raise InvalidModelError(f"{source}: too short to be an onnxprune container ({len(data)} bytes)")
    magic, version, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise InvalidModelError(f"{source}: not an onnxprune container (bad magic; is it an .onnx file?)")
    if version != FORMAT_VERSION:
        older = " (written by an older onnxprune: compress the model again)" if version < FORMAT_VERSION else ""
        raise InvalidModelError(f"{source}: container format {version} is not supported (this onnxprune reads "
                                f"{FORMAT_VERSION}){older}")
    if hlen > MAX_HEADER_BYTES:
        raise InvalidModelError(f"{source}: corrupt container: header of {hlen} bytes")
    body, digest = data[:-DIGEST], data[-DIGEST:]
    if _HEAD.size + hlen > len(body):
        raise InvalidModelError(f"{source}: truncated container (header runs past the end)")
    if hashlib.sha256(body).digest() != digest:
        raise InvalidModelError(f"{source}: corrupt or truncated container (checksum mismatch)")
    try:
        header = json.loads(body[_HEAD.size:_HEAD.size + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidModelError(f"{source}: corrupt container header: {e}") from None
    except RecursionError:
        raise InvalidModelError(f"{source}: corrupt container header: nested too deeply") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list) \
            or not isinstance(header.get("graph"), dict):
        raise InvalidModelError(f"{source}: corrupt container header: expected graph and tensors")
    return Container(header, memoryview(body)[_HEAD.size + hlen:])


def _int(where: object, key: str) -> int:
    value = where.get(key) if isinstance(where, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidModelError(f"corrupt container: {key} is {value!r}, expected an integer")
    return value
