"""Relative-index sparse encoding (Han et al., ICLR 2016, §2, Fig. 2).

The non-zero entries of a flattened weight are stored as (gap, value) pairs: ``gap`` is the distance from the
previous entry minus one, in ``index_bits`` bits (8 for conv layers, 5 for fully connected ones). When a gap
does not fit, *filler* entries — value index 0, which the codebook maps to 0.0, and the largest gap — are
inserted until it does. Decoding: ``position = cumsum(gap + 1) - 1``.

Fillers also run on after the last non-zero until the tensor's end is less than one span away, so the index
covers the whole tensor: a reader can bound the tensor's size by the number of entries
(:func:`max_size`) before allocating it, and a file cannot declare a huge tensor of a few bytes.
"""

from __future__ import annotations

import numpy as np


def encode(positions: np.ndarray, values: np.ndarray, index_bits: int,
           size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaps (each < 2**index_bits) and value indices, fillers included, for sorted ``positions`` in a tensor of
    ``size`` elements (default: just past the last position)."""
    span = 1 << index_bits
    positions = np.asarray(positions, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1)                     # >= 1
    fillers = (gaps - 1) // span
    covered = int(positions[-1]) + 1 if positions.size else 0
    tail = 0 if size is None else max(size - covered, 0) // span
    out_gaps = np.full(int(fillers.sum()) + positions.size + tail, span - 1, dtype=np.int64)
    out_values = np.zeros(out_gaps.size, dtype=np.int64)
    last = np.cumsum(fillers + 1) - 1                          # where each real entry lands
    out_gaps[last] = gaps - fillers * span - 1
    out_values[last] = values
    return out_gaps, out_values


def max_size(entries: int, index_bits: int) -> int:
    """The largest tensor ``entries`` index entries can describe (each covers at most one span, and the end
    lies less than one span past the last)."""
    return (entries + 1) * (1 << index_bits) - 1


def decode(gaps: np.ndarray, values: np.ndarray, size: int, index_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions and value indices of the entries (fillers have value index 0). With ``index_bits``, the index
    must also cover the tensor to within one span of its end."""
    positions = np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1
    if positions.size and positions[-1] >= size:
        raise ValueError(f"sparse index runs past the tensor ({positions[-1]} >= {size})")
    covered = int(positions[-1]) + 1 if positions.size else 0
    if index_bits is not None and size - covered >= 1 << index_bits:
        raise ValueError(f"sparse index ends {size - covered} elements before the tensor does")
    return positions, np.asarray(values, dtype=np.int64)
