"""Canonical Huffman coding of small-alphabet integer streams (codebook indices, index gaps), on ``bitarray``
(its C encoder/decoder). A stream is stored as its bytes plus the canonical table: the number of codes of each
length and the symbols in code order — a few dozen integers, enough to rebuild the code.

:func:`decode` validates a stream read from a file before decoding it: the table must be a prefix code (Kraft
sum <= 1) of at most :data:`MAX_CODE_LENGTH` bits, and the declared symbol count cannot exceed the stream's
bits (every code is at least one bit), so a forged count cannot make it allocate more than the file implies.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman

MAX_CODE_LENGTH = 31  # what bitarray's canonical decoder accepts
MAX_SYMBOL = 1 << 20


@dataclass(frozen=True)
class HuffmanStream:
    data: bytes
    nbits: int
    count: tuple[int, ...]      # codes per length (index = length)
    symbols: tuple[int, ...]    # symbols in canonical order
    length: int                 # number of symbols encoded


def encode(symbols: np.ndarray) -> HuffmanStream:
    values = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if values.size == 0:
        return HuffmanStream(b"", 0, (), (), 0)
    uniq, freq = np.unique(values, return_counts=True)
    if uniq.size == 1:  # one symbol: a 1-bit code (canonical_huffman needs two)
        table = {int(uniq[0]): int(freq[0]), int(uniq[0]) + 1: 0}
    else:
        table = {int(s): int(f) for s, f in zip(uniq, freq)}
    code, count, order = canonical_huffman(table)
    bits = bitarray(endian="big")
    bits.encode(code, values.tolist())
    return HuffmanStream(bits.tobytes(), len(bits), tuple(int(c) for c in count), tuple(int(s) for s in order),
                         int(values.size))


def validate(stream: HuffmanStream) -> None:
    """Raise ValueError unless ``stream`` is a well-formed canonical Huffman stream (see the module doc)."""
    if not 0 <= stream.nbits <= 8 * len(stream.data):
        raise ValueError(f"stream declares {stream.nbits} bits in {len(stream.data)} bytes")
    if not 0 <= stream.length <= stream.nbits:
        raise ValueError(f"stream declares {stream.length} symbols in {stream.nbits} bits")
    if stream.length == 0:
        return
    if not 1 < len(stream.count) <= MAX_CODE_LENGTH + 1 or stream.count[0] != 0 or min(stream.count) < 0:
        raise ValueError("malformed code table (code lengths)")
    if sum(stream.count) != len(stream.symbols):
        raise ValueError("malformed code table (symbol count)")
    if sum(Fraction(c, 1 << i) for i, c in enumerate(stream.count)) > 1:
        raise ValueError("malformed code table (not a prefix code)")
    if any(not 0 <= s < MAX_SYMBOL for s in stream.symbols) or len(set(stream.symbols)) != len(stream.symbols):
        raise ValueError("malformed code table (symbols)")


def decode(stream: HuffmanStream) -> np.ndarray:
    validate(stream)
    if stream.length == 0:
        return np.zeros(0, dtype=np.int64)
    bits = bitarray(endian="big")
    bits.frombytes(stream.data)
    del bits[stream.nbits:]
    it = canonical_decode(bits, list(stream.count), list(stream.symbols))
    out = np.fromiter(it, dtype=np.int64, count=stream.length)
    return out
