"""Block-aligned unit order for groups that some layers read only part of.

A group's units are not always read whole: a zero-padded shortcut (CIFAR ResNet's option A) makes one residual
stream of 16 + 16 + 32 units that the first stage reads 16 of and the second 32 of; a Split hands each half to
another layer (YOLO's C2f). Keeping the ``k`` highest-scoring units keeps a multiple of the block in the group but
an arbitrary count in each such layer (11 of 16, 23 of 32), which takes those layers off the runtime's channel
block (ORT CPU's NCHWc: reorders around them) and below or between the counts a latency table measured: the
ResNet-56 plans predicted at 0.735 and 0.737 of the model's latency measured 0.64 and 0.87.

Rule (:func:`block_aligned_scores`): the units are split into *segments*, the units read by the same set of
partial readers; each segment into *chunks* of ``multiple`` units by score (highest first). Every unit gets its
chunk's mean score, so the highest-scoring units of a group are taken a whole chunk at a time, and any kept
count that is a multiple of ``multiple`` keeps a multiple of it in every layer. The sum of the scores a chunk
removes is unchanged. The best chunk of a few segments (greedy set cover) ranks above all others, and a plan
keeps at least those chunks (the group's *floor*), so every partial reader keeps at least one chunk: a plan never
leaves a layer reading none of its channels (a Split's half kept at 0 of 16 rewrote to a conv of 0 inputs).

Limits: groups whose segments are not all multiples of ``multiple`` (ShuffleNet's 12-of-24 halves with a block of
16) are ordered a unit at a time (the protection only); groups constrained by grouped convs (their own
per-block selection) are left as scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.channels.analysis import ChannelAnalysis, ChannelGroup


@dataclass(frozen=True)
class Segments:
    """A group's units split by which partial readers read them: ``units`` per segment (unit indices), and per
    partial reader the segments it reads."""

    units: tuple[np.ndarray, ...]
    readers: tuple[frozenset[int], ...]


def reader_segments(analysis: ChannelAnalysis, group: ChannelGroup) -> Segments:
    """The segments of ``group`` (one segment, no readers, when every layer reads all of it)."""
    position = np.full(len(analysis.roots), -1, dtype=np.int64)
    position[group.units] = np.arange(group.channels)
    partial: dict[frozenset[int], None] = {}
    for tensor in dict.fromkeys(t for _, t in analysis.consumers):
        layout = analysis.layouts.get(tensor)
        if layout is None:
            continue
        read = position[analysis.roots[layout.elems]]
        read = frozenset(int(u) for u in read[read >= 0])
        if 0 < len(read) < group.channels:
            partial[read] = None
    readers = list(partial)
    signature = [frozenset(i for i, r in enumerate(readers) if u in r) for u in range(group.channels)]
    by_signature: dict[frozenset[int], list[int]] = {}
    for u, s in enumerate(signature):
        by_signature.setdefault(s, []).append(u)
    segments = list(by_signature)
    index = {s: i for i, s in enumerate(segments)}
    return Segments(tuple(np.asarray(by_signature[s], dtype=np.int64) for s in segments),
                    tuple(frozenset(index[s] for s in segments if i in s) for i in range(len(readers))))


def _protected(segments: Segments, best: list[float]) -> set[int]:
    """Segments whose best chunk is kept first: a greedy cover of every partial reader."""
    uncovered = set(range(len(segments.readers)))
    chosen: set[int] = set()
    while uncovered:
        seg = max(range(len(segments.units)),
                  key=lambda s: (sum(1 for r in uncovered if s in segments.readers[r]), best[s]))
        chosen.add(seg)
        uncovered = {r for r in uncovered if seg not in segments.readers[r]}
    return chosen


def aligned_group_scores(segments: Segments, scores: np.ndarray, multiple: int) -> tuple[np.ndarray, int] | None:
    """``scores`` replaced by chunk means (see the module doc), and the fewest units a plan must keep so that every
    partial reader keeps its protected chunk; None when the group cannot be aligned."""
    if not segments.readers or any(len(u) % multiple for u in segments.units):
        return None
    scores = np.asarray(scores, dtype=np.float64)
    chunks: list[tuple[int, int, np.ndarray]] = []   # (segment, rank in it, units)
    for s, units in enumerate(segments.units):
        ordered = units[np.argsort(-scores[units], kind="stable")]
        chunks += [(s, i // multiple, ordered[i:i + multiple]) for i in range(0, len(ordered), multiple)]
    means = [float(scores[part].mean()) for _, _, part in chunks]
    protected = _protected(segments, [m for (_, rank, _), m in zip(chunks, means, strict=True) if rank == 0])
    top = max(means)
    ranked = sorted(((rank == 0 and s in protected, mean, -int(part.min()), part)
                     for (s, rank, part), mean in zip(chunks, means, strict=True)), key=lambda c: c[:3])
    aligned = np.empty_like(scores)
    previous = -np.inf
    for is_protected, mean, _, part in ranked:   # lowest first
        value = max(mean, top) if is_protected else mean
        if value <= previous:   # distinct values: a count keeps whole chunks, whatever ties the scores had
            value = previous + max(abs(previous), 1e-30) * 1e-9
        aligned[part] = value
        previous = value
    return aligned, len(protected) * multiple


@dataclass(frozen=True)
class AlignedScores:
    """Scores in block-aligned order, and per partially read group the fewest units a plan keeps (``floors``)."""

    scores: dict[str, np.ndarray]
    floors: dict[str, int]


def block_aligned_scores(analysis: ChannelAnalysis, scores: dict[str, np.ndarray], multiple: int) -> AlignedScores:
    """``scores`` with every partially read group's units ordered a chunk of ``multiple`` at a time (one unit at a
    time where its parts are not multiples of ``multiple``, or ``multiple`` is 1: then only the protection)."""
    out, floors = dict(scores), {}
    for group in analysis.prunable:
        if group.blocks or group.id not in scores:
            continue
        segments = reader_segments(analysis, group)
        aligned = aligned_group_scores(segments, scores[group.id], max(multiple, 1)) or \
            aligned_group_scores(segments, scores[group.id], 1)
        if aligned is not None:
            out[group.id], floors[group.id] = aligned
    return AlignedScores(out, floors)
