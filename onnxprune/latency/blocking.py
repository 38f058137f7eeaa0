"""Which channel groups a blocked kernel touches, and so which grid each group's counts are measured and kept on.

ORT's CPU provider runs a 2-D Conv whose output channels are a multiple of the block (16 on AVX-512) in the
blocked NCHWc layout, and the ops between such convs with it; a count off the block takes them out of that
layout and the reorders cost more than the channels save (see :class:`onnxprune.targets.RuntimeTarget`).
ConvTranspose, Gemm and MatMul, and convs with outputs off the block (a 2-class head), run unblocked: a group
that only such layers write and read gains from every finer step (the ConvTranspose decoder's last
ConvTranspose at 8 of 16 channels: 0.56 of the model's latency, 0.80 at 16).

Rule: a group is *blocked* when a Conv (not ConvTranspose) with a constant 4-D weight whose output channels are a
multiple of ``block`` writes it, reads it or is depthwise over it; a Conv whose weight is not a constant counts
as blocked (unknown). A blocked group's grid is the target's ``grid_multiple``, any other group's its
``unblocked_multiple``; so is a blocked group of at most :data:`SMALL_BLOCKS` blocks. Its only count below the
full one would be the block itself, and such a group is often a model's most expensive (a 16- or 32-channel first
stage at full resolution): with it held at the block, StudentNet's latency plans had a floor of 0.56 of the
original, ResNet-56's (digits) 0.62 and U-Net's 0.57; on the finer grid, 0.48, 0.40 and 0.27, and ResNet-56's
and U-Net's latency plans at 0.5 measured 0.49 (both at their old floor before), at efficiency 0.70-0.78.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import ChannelAnalysis

#: A blocked group of at most this many blocks is measured on the finer grid too (see the module doc).
SMALL_BLOCKS = 2


def runs_blocked(node: gs.Node, block: int) -> bool:
    """Whether ORT's CPU provider runs ``node`` in the blocked layout (see the module doc)."""
    if node.op != "Conv":
        return False
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(weight, gs.Constant):
        return True
    shape = weight.shape
    return len(shape) == 4 and shape[0] % block == 0


def group_multiples(analysis: ChannelAnalysis, block: int, unblocked: int) -> dict[str, int]:
    """Each prunable group's grid multiple: ``block`` when a blocked kernel touches it, else ``unblocked``."""
    if unblocked == block:
        return {g.id: block for g in analysis.prunable}
    group_of = np.full(len(analysis.roots), -1, dtype=np.int64)
    for i, g in enumerate(analysis.prunable):
        group_of[g.units] = i
    blocked: set[int] = set()

    def touch(roots: np.ndarray) -> None:
        hit = group_of[roots]
        blocked.update(int(i) for i in np.unique(hit[hit >= 0]))

    for source in analysis.sources:
        if source.node is not None and runs_blocked(source.node, block):
            touch(analysis.roots[source.elems])
    for node, tensor in [*analysis.consumers, *((n, n.inputs[0].name) for n in analysis.depthwise)]:
        layout = analysis.layouts.get(tensor)
        if layout is not None and runs_blocked(node, block):
            touch(analysis.roots[layout.elems])
    return {g.id: block if i in blocked and g.channels > SMALL_BLOCKS * block else unblocked
            for i, g in enumerate(analysis.prunable)}
