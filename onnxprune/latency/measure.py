"""Interleaved whole-model latency: each round runs every model once, in an order rotated per round, so the
drifts of a shared, noisy machine hit all models alike (as ``bench`` does); medians per model, and for ratios
the median of per-round ratios (:func:`paired_timing`).

The rounds are run in two halves, the sessions created anew for the second half in the reverse order: on ORT
CPU, of sessions created from serialized models in one process, a later one runs the same model faster
(measured on this project's 2-core Xeon, 1 thread: the 2nd to 4th 1-3% faster than the 1st; the 1st of nine
6% slower than the 9th), so the model created first, usually the original, looked slower than it is and every
pruned model faster. Reversing the order cancels that (the same four copies: within 1.2%)."""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def interleaved_times(models: dict[str, onnx.ModelProto], target: RuntimeTarget, threads: int,
                      shapes: dict[str, tuple[int, ...]], min_rounds: int = MIN_ROUNDS,
                      min_seconds: float = MIN_SECONDS, profile_dir: Path | None = None) -> dict[str, list[float]]:
    """Seconds per run of every model, one entry per round (run interleaved, see the module doc): the i-th
    entries of all models come from the same round, a few milliseconds apart. ``profile_dir``: the sessions
    profile into it (ORT's profiler, one file per session and half; see :func:`interleaved_kernel_ms`)."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = 0
    for half, order in enumerate((names, names[::-1])):
        sessions = {}
        for k in order:
            options = session_options(threads)
            if profile_dir is not None:
                options.enable_profiling = True
                options.profile_file_prefix = str(profile_dir / f"{names.index(k)}-{half}")
            sessions[k] = ort.InferenceSession(models[k].SerializeToString(), options,
                                               providers=providers(target.provider))
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
        if profile_dir is not None:
            for session in sessions.values():
                session.end_profiling()
        del sessions
    return times


#: Kernels a one-layer graph runs that the model around the layer mostly does not: ORT CPU's layout changes
#: into and out of its blocked format (NCHWc), which a graph of convs pays once at its boundaries.
LAYOUT_KERNELS = ("ReorderInput", "ReorderOutput")


def run_kernel_times(events: list[dict], skip: int = WARMUP) -> list[float]:
    """Microseconds of every run in one session's profile (ORT's profiler events), the sum of its node kernels
    apart from ``LAYOUT_KERNELS``, the first ``skip`` runs (the warm-up) left out."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Node"
                   and str(e.get("name", "")).endswith("_kernel_time")
                   and e.get("args", {}).get("op_name") not in LAYOUT_KERNELS)
    sums = [0.0] * len(runs)
    i = 0
    for ts, dur in nodes:
        while i < len(runs) and ts > runs[i][1]:
            i += 1
        if i < len(runs) and ts >= runs[i][0]:
            sums[i] += dur
    return sums[skip:]


def interleaved_kernel_ms(models: dict[str, onnx.ModelProto], target: RuntimeTarget, threads: int,
                          shapes: dict[str, tuple[int, ...]], min_rounds: int = MIN_ROUNDS,
                          min_seconds: float = MIN_SECONDS) -> dict[str, float]:
    """Per model, the median over runs of its kernels' time (ORT's profiler), the layout changes
    (``LAYOUT_KERNELS``) and the session call left out: what a layer costs inside a graph of layers. Timed as
    :func:`interleaved_times` times (the profiles written to a private temporary folder, removed after)."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as folder:
        interleaved_times(models, target, threads, shapes, min_rounds, min_seconds, Path(folder))
        per_model: dict[str, list[float]] = {n: [] for n in models}
        names = list(models)
        for path in Path(folder).glob("*.json"):
            index = int(path.name.split("-", 1)[0])
            per_model[names[index]] += run_kernel_times(json.loads(path.read_text()))
    return {n: statistics.median(t) / 1000 if t else math.nan for n, t in per_model.items()}


def interleaved_ms(models: dict[str, onnx.ModelProto], target: RuntimeTarget, threads: int,
                   shapes: dict[str, tuple[int, ...]], min_rounds: int = MIN_ROUNDS,
                   min_seconds: float = MIN_SECONDS) -> tuple[dict[str, float], int]:
    """Median milliseconds per model (run interleaved, see the module doc) and the number of rounds."""
    times = interleaved_times(models, target, threads, shapes, min_rounds, min_seconds)
    return {n: statistics.median(t) * 1000 for n, t in times.items()}, len(next(iter(times.values())))


@dataclass(frozen=True)
class PairedTiming:
    """Models timed interleaved against a reference: ``ms`` the median per model, ``ratios`` each model's
    median over rounds of (its time / the reference's time in the same round), ``rounds`` the rounds run."""

    ms: dict[str, float]
    ratios: dict[str, float]
    rounds: int


def paired_timing(models: dict[str, onnx.ModelProto], reference: str, target: RuntimeTarget, threads: int,
                  shapes: dict[str, tuple[int, ...]], min_rounds: int = MIN_ROUNDS,
                  min_seconds: float = MIN_SECONDS) -> PairedTiming:
    """Latency ratios to ``reference`` from rounds paired in time.

    Each round's ratio compares two runs a few milliseconds apart, so a stretch of a busy machine (another
    process on a core: at 2 threads on a 2-core VM the original ran 16 ms in one window, 22 ms in the next, and
    slowed more than a pruned model) moves both alike and cancels. The ratio of the two medians does not: on
    this project's 2-core VM, one pruned DenseNet against the original at 2 threads, ten windows of 30 rounds,
    spread 0.55-0.71 as a ratio of medians and 0.57-0.68 as the median of per-round ratios (StudentNet:
    0.58-0.73 and 0.64-0.71)."""
    times = interleaved_times(models, target, threads, shapes, min_rounds, min_seconds)
    ref = np.asarray(times[reference])
    return PairedTiming({n: statistics.median(t) * 1000 for n, t in times.items()},
                        {n: float(np.median(np.asarray(t) / ref)) for n, t in times.items()}, len(ref))
