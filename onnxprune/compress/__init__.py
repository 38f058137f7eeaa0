"""Deep Compression: connection pruning, k-means weight sharing, Huffman-coded ``.onnxz`` containers."""

from onnxprune.compress.kmeans import Init
from onnxprune.compress.pipeline import (
    CompressOptions,
    CompressResult,
    Sharing,
    compress,
    decompress,
)

__all__ = ["CompressOptions", "CompressResult", "Init", "Sharing", "compress", "decompress"]
