"""Side-by-side latency comparison of model variants (interleaved, with bootstrap intervals)."""

from onnxprune.benchmark.runner import BenchOptions, ModelResult, run_benchmark
from onnxprune.benchmark.stats import Speedup, Summary, paired_speedup, speedup

__all__ = ["BenchOptions", "ModelResult", "Speedup", "Summary", "paired_speedup", "run_benchmark", "speedup"]
