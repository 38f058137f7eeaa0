"""Deep Compression: connection pruning, k-means weight sharing, Huffman-coded ``.onnxz`` containers."""

from onnxprune.compression.kmeans import Init
from onnxprune.compression.pipeline import (
    CompressOptions,
    CompressResult,
    Sharing,
    compress,
    decompress,
)

__all__ = ["CompressOptions", "CompressResult", "Init", "Sharing", "compress", "decompress"]
