"""Every pass pipeline onnxprune runs, defined once (the API, prune, compress and emit use these)."""

from __future__ import annotations

from onnxprune.channels import ChannelAnalysis
from onnxprune.pass_infra import GraphPass
from onnxprune.passes import Cleanup, FoldBatchNorm, FoldChannelAffine, Simplify
from onnxprune.passes.prune_channels import MaskRemovedChannels, PruneChannels
from onnxprune.passes.prune_connections import ConnectionPruning, PruneConnections
from onnxprune.plan import PruningPlan


def fold_passes(simplify: bool = True) -> list[GraphPass]:
    """The fold pipeline: exact simplifications (``simplify``: shared constants, common subexpressions, no-op
    nodes, Reshape targets, Slice chains), then BatchNorms (into the layer, or the layer and its bias Add), then
    per-channel affine ops (a bias Add, a scale after a BN) into the layer they follow."""
    return [*([Simplify()] if simplify else []), FoldBatchNorm(), FoldChannelAffine(), Cleanup()]


def prune_passes(plan: PruningPlan, analysis: ChannelAnalysis | None = None,
                 input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[GraphPass]:
    """Channel pruning by ``plan`` (``analysis``: of the very graph the pipeline gets; else the pass analyses it,
    with ``input_shapes``), then cleanup."""
    return [PruneChannels(plan, analysis, input_shapes), Cleanup()]


def mask_passes(plan: PruningPlan, input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[GraphPass]:
    """The verification oracle: consumer weights reading removed channels zeroed, nothing sliced."""
    return [MaskRemovedChannels(plan, input_shapes=input_shapes)]


def connection_passes(pruning: ConnectionPruning) -> list[GraphPass]:
    """Connection (weight) pruning by magnitude."""
    return [PruneConnections(pruning)]
