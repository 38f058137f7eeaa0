"""Helpers shared by the benchmark scripts: machine description, digits data, interleaved timing."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


def machine() -> str:
    import torch

    return (f"{platform.machine()}, {platform.system()}, {_cpu_name()}, Python {platform.python_version()}, "
            f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def digits_test() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DIGITS / "digits_test.npz")
    return data["input"], data["labels"]


def accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == labels).mean())


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """A deployment-like session: all graph optimizations on, no spinning (fair interleaved A/B)."""
    from onnxprune.targets import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def interleaved_medians(sessions: dict[str, ort.InferenceSession], feeds: dict[str, np.ndarray], runs: int,
                        warmup: int = 5) -> dict[str, float]:
    """Median latency (s) per session; each round runs every session once, in an order rotated per round."""
    names = list(sessions)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feeds)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            sessions[name].run(None, feeds)
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}
