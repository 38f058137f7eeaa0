"""Emission for ONNX Runtime: CPU (portable offline optimization, int8), CUDA (float16), mobile (ORT format)."""

from onnxprune.emission.options import EmitOptions, Int8, Style, Target
from onnxprune.emission.pipeline import EmitResult, emit

__all__ = ["EmitOptions", "EmitResult", "Int8", "Style", "Target", "emit"]
