"""Side-by-side latency comparison of model variants (interleaved, with bootstrap intervals)."""

from onnxprune.bench.runner import BenchOptions, ModelResult, run_benchmark
from onnxprune.bench.stats import Speedup, Summary, speedup

__all__ = ["BenchOptions", "ModelResult", "Speedup", "Summary", "run_benchmark", "speedup"]
