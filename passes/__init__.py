"""Graph passes (installed as ``onnxprune.passes``): each module holds one :class:`GraphPass`."""

from .cleanup import Cleanup
from .fold_batchnorm import FoldBatchNorm
from .fold_channel_affine import FoldChannelAffine

__all__ = ["Cleanup", "FoldBatchNorm", "FoldChannelAffine"]
