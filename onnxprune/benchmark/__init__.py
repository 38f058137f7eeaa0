"""Side-by-side latency comparison of model variants (interleaved, with bootstrap intervals)."""

from onnxprune.benchmark.runner import BenchOptions, ModelResult, run_benchmark
from onnxprune.benchmark.stats import Speedup, Summary, speedup

__all__ = ["BenchOptions", "ModelResult", "Speedup", "Summary", "run_benchmark", "speedup"]
