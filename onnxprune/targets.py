"""Deployment targets: the one notion of "where the model runs" that ``emit --target``, ``profile --target``,
``prune --target`` (its ``round_to`` default and latency table) and ``bench --provider`` share.

A target fixes the ONNX Runtime execution provider, the graph optimizations a deployed session uses, the
precision the emitted model computes in, and the kept-channel multiple its kernels run fastest with. Session
options are the same everywhere a latency is measured (bench, profile, the latency check after pruning): all
graph optimizations, ``threads`` intra-op threads, one inter-op thread, no spinning (spinning threads of one
session steal cores from the next).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import onnxruntime as ort

from onnxprune.errors import UsageError


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"


@dataclass(frozen=True)
class RuntimeTarget:
    """``provider``: ORT provider (``cpu``/``cuda``); ``precision``: what the emitted model computes in;
    ``channel_multiple``: kept-channel multiple its kernels run fastest with (``prune --round-to`` default).
    CPU: ORT's x86 kernels work on blocks of 16 channels on AVX-512 machines (8 on AVX2; the NCHWc layout); a
    count off the block keeps pooling and other ops out of that layout, and the reorders around them can make a
    pruned network slower than the original (measured: a depthwise StudentNet 0.92x at multiples of 8 on an
    AVX-512 Xeon, 1.25x at multiples of 16). CUDA: float16 tensor cores take multiples of 8. Mobile:
    XNNPACK/NNAPI kernels tile by 4 or 8 (profiled on this machine's CPU provider).
    ``grid_multiple``: the counts latency profiles measure and latency plans keep. On the CPU it is the block:
    a layer timed alone at a count off the block skips the reorders that the same layer in a blocked graph
    pays, so a grid of 8 made counts off the block look fast (ResNet-56 at 32x32, 2 threads: plans predicted at
    0.70-0.83 measured 0.49-0.97, the reorders' time up by 40-80%). ``unblocked_multiple``: the grid of groups
    that no blocked kernel writes or reads (:mod:`onnxprune.latency.blocking`: only ConvTranspose, Gemm, MatMul,
    or convs whose outputs are off the block); None: ``grid_multiple``. Measured on the ConvTranspose decoder
    (1 thread): its last ConvTranspose at 8 of 16 channels ran the model at 0.56 of the original, at 16 at 0.80,
    while its blocked convs at 8 gained nothing (0.80)."""

    name: str
    provider: str
    precision: Precision
    channel_multiple: int
    grid_multiple: int = 8     # latency profiles measure multiples of this (the finest block any kernel uses)
    unblocked_multiple: int | None = None

    @property
    def loose_multiple(self) -> int:
        return self.unblocked_multiple or self.grid_multiple


TARGETS: dict[str, RuntimeTarget] = {
    "cpu": RuntimeTarget("cpu", "cpu", Precision.FP32, 16, grid_multiple=16, unblocked_multiple=8),
    "cuda": RuntimeTarget("cuda", "cuda", Precision.FP16, 8),
    "mobile": RuntimeTarget("mobile", "cpu", Precision.FP32, 8),
}


def runtime_target(name: str) -> RuntimeTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"`target` {name!r}: expected one of {', '.join(TARGETS)}") from None


def session_options(threads: int) -> ort.SessionOptions:
    """The session options every latency measurement uses (see the module doc)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def providers(provider: str) -> list[str | tuple[str, dict[str, str]]]:
    """ORT's provider list for ``provider`` (CUDA with the CPU fallback); UsageError when CUDA is not there."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise UsageError(f"the cuda provider needs onnxruntime-gpu and an NVIDIA GPU; this onnxruntime "
                         f"{ort.__version__} offers {', '.join(available)}")
    return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"}), "CPUExecutionProvider"]
