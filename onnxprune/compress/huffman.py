"""Canonical Huffman coding of small-alphabet integer streams (codebook indices, index gaps), on ``bitarray``
(its C encoder/decoder). A stream is stored as its bytes plus the canonical table: the number of codes of each
length and the symbols in code order — a few dozen integers, enough to rebuild the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman


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


def decode(stream: HuffmanStream) -> np.ndarray:
    if stream.length == 0:
        return np.zeros(0, dtype=np.int64)
    bits = bitarray(endian="big")
    bits.frombytes(stream.data)
    del bits[stream.nbits:]
    it = canonical_decode(bits, list(stream.count), list(stream.symbols))
    out = np.fromiter(it, dtype=np.int64, count=stream.length)
    return out
