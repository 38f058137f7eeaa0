"""Interleaved whole-model latency: each round runs every model once, in an order rotated per round, so the
drifts of a shared, noisy machine hit all models alike (as ``bench`` does); medians per model."""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.targets import RuntimeTarget, providers, session_options

#: At least this many rounds, and rounds until this many seconds have passed (at most MAX_ROUNDS).
MIN_ROUNDS = 30
MIN_SECONDS = 1.0
MAX_ROUNDS = 1000
WARMUP = 3


def random_feeds(session: ort.InferenceSession, shapes: dict[str, tuple[int, ...]], seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Seeded random inputs: ``shapes`` where given, else the session's static dims (1 for symbolic ones)."""
    rng = np.random.default_rng(seed)
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {}
    for i in session.get_inputs():
        shape = shapes.get(i.name) or tuple(d if isinstance(d, int) else 1 for d in i.shape)
        dtype = dtypes.get(i.type, np.float32)
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) \
            else rng.integers(0, 4, shape).astype(dtype)
    return feeds


def interleaved_ms(models: dict[str, onnx.ModelProto], target: RuntimeTarget, threads: int,
                   shapes: dict[str, tuple[int, ...]], min_rounds: int = MIN_ROUNDS,
                   min_seconds: float = MIN_SECONDS) -> tuple[dict[str, float], int]:
    """Median milliseconds per model (run interleaved, see the module doc) and the number of rounds."""
    sessions = {k: ort.InferenceSession(m.SerializeToString(), session_options(threads),
                                        providers=providers(target.provider)) for k, m in models.items()}
    feeds = {k: random_feeds(s, shapes) for k, s in sessions.items()}
    names = list(sessions)
    for name in names:
        for _ in range(WARMUP):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < min_seconds and rounds < MAX_ROUNDS):
        order = names[rounds % len(names):] + names[:rounds % len(names)]
        for name in order:
            t0 = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {n: statistics.median(t) * 1000 for n, t in times.items()}, rounds
