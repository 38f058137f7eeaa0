"""Graph passes (installed as ``onnxprune.passes``): each module holds one :class:`GraphPass`."""

from .cleanup import Cleanup
from .fold_batchnorm import FoldBatchNorm
from .fold_channel_affine import FoldChannelAffine
from .prune_channels import MaskRemovedChannels, PruneChannels
from .prune_connections import ConnectionPruning, PruneConnections
from .simplify import Simplify

__all__ = ["Cleanup", "ConnectionPruning", "FoldBatchNorm", "FoldChannelAffine", "MaskRemovedChannels", "PruneChannels",
           "PruneConnections", "Simplify"]
