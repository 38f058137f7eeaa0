"""Interleaved whole-model latency: each round runs every model once, in an order rotated per round, so the
drifts of a shared, noisy machine hit all models alike (as ``bench`` does); medians per model.

The rounds are run in two halves, the sessions created anew for the second half in the reverse order: on ORT
CPU, of sessions created from serialized models in one process, a later one runs the same model faster
(measured on this project's 2-core Xeon, 1 thread: the 2nd to 4th 1-3% faster than the 1st; the 1st of nine
6% slower than the 9th), so the model created first, usually the original, looked slower than it is and every
pruned model faster. Reversing the order cancels that (the same four copies: within 1.2%)."""

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
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = 0
    for half, order in enumerate((names, names[::-1])):
        sessions = {k: ort.InferenceSession(models[k].SerializeToString(), session_options(threads),
                                            providers=providers(target.provider)) for k in order}
        feeds = {k: random_feeds(s, shapes) for k, s in sessions.items()}
        for name in order:
            for _ in range(WARMUP):
                sessions[name].run(None, feeds[name])
        start = time.perf_counter()
        done = 0
        while done < (min_rounds + 1 - half) // 2 or (time.perf_counter() - start < min_seconds / 2 and
                                                       rounds < MAX_ROUNDS):
            rotated = names[rounds % len(names):] + names[:rounds % len(names)]
            for name in rotated:
                t0 = time.perf_counter()
                sessions[name].run(None, feeds[name])
                times[name].append(time.perf_counter() - t0)
            rounds += 1
            done += 1
        del sessions
    return {n: statistics.median(t) * 1000 for n, t in times.items()}, rounds
