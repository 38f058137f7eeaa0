"""Run several models in one process, interleaved, and measure them side by side.

Each round runs every model once, in an order rotated per round, so drifts of a shared, noisy machine hit all
models alike. Sessions use all graph optimizations (as deployed) and no intra-op spinning (spinning threads of
one session would steal cores from the next). A model that cannot be loaded or run is reported with its error;
the others still run.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.benchmark.stats import Speedup, Summary, paired_speedup
from onnxprune.data import Dataset, ImagePreprocess, load_data
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.flops import count_costs
from onnxprune.io import read_model
from onnxprune.latency.measure import random_feeds
from onnxprune.normalize import normalize
from onnxprune.targets import providers, session_options
from onnxprune.verify import InputSpec, resolve_input_shapes


class Provider(enum.StrEnum):
    """The ONNX Runtime execution provider a benchmark runs on."""

    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 100
    seconds: float | None = None       # stop after this long instead (at least 5 rounds)
    threads: tuple[int, ...] = (1,)
    provider: Provider = Provider.CPU
    batch: int = 1
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    data: Path | None = None
    preprocess: ImagePreprocess = ImagePreprocess()
    data_limit: int | None = None
    warmup: int = 5
    seed: int = 0


@dataclass
class ModelResult:
    path: str
    threads: int
    error: str | None = None
    latency: Summary | None = None
    times: list[float] = field(default_factory=list, repr=False)
    session_s: float | None = None
    memory_mb: float | None = None
    file_mb: float | None = None
    macs: int | None = None
    params: int | None = None
    speedup: Speedup | None = None
    max_abs_diff: float | None = None    # on the seeded random inputs, against the first model
    rel_l2: float | None = None          # ||out - first|| / ||first|| on the same random inputs
    top1_agreement: float | None = None  # with the first model's predictions on --data (None without data)
    accuracy: float | None = None        # on --data with labels


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # not Linux: peak RSS is the best we have
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def providers_for(provider: Provider | str) -> list[str | tuple[str, dict[str, str]]]:
    """ORT's provider list for ``provider`` (CUDA with the CPU fallback); UsageError when CUDA is not there."""
    return providers(Provider(provider).value)


def _session(path: str, threads: int, provider: Provider) -> ort.InferenceSession:
    return ort.InferenceSession(path, session_options(threads), providers=providers_for(provider))


def _describe(path: str, options: BenchOptions) -> tuple[onnx.ModelProto | None, dict[str, tuple[int, ...]]]:
    """The model (None for .ort files) and concrete input shapes for it."""
    if path.endswith(".ort"):
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        shapes = {}
        for i in sess.get_inputs():
            dims = [d if isinstance(d, int) else None for d in i.shape]
            if i.name in options.input_shapes:
                shapes[i.name] = options.input_shapes[i.name]
            elif None in dims[1:]:
                raise UsageError(f"{path}: input {i.name!r} has dynamic dims; give `input_shape` {i.name}=...")
            else:
                shapes[i.name] = tuple(options.batch if d is None else d for d in dims)
        return None, shapes
    model = normalize(read_model(path, ort_artifact=True), copy=False)
    return model, resolve_input_shapes(model, InputSpec(options.input_shapes, options.batch), default_other=None)


def run_benchmark(paths: list[str], options: BenchOptions,
                  progress: Callable[[int, int], None] | None = None) -> list[ModelResult]:
    """Results per (model, thread count), in the order given; the first model is the baseline."""
    if options.runs < 1:
        raise UsageError("`runs` must be >= 1")
    results: list[ModelResult] = []
    total_rounds = len(options.threads) * options.runs
    done = 0
    for threads in options.threads:
        loaded: list[tuple[ModelResult, ort.InferenceSession, dict[str, np.ndarray]]] = []
        group: list[ModelResult] = []
        for path in paths:
            r = ModelResult(path, threads)
            group.append(r)
            try:
                model, shapes = _describe(path, options)
                before = _rss_mb()
                start = time.perf_counter()
                sess = _session(path, threads, options.provider)
                r.session_s = time.perf_counter() - start
                feeds = random_feeds(sess, shapes, options.seed)
                for _ in range(options.warmup):
                    sess.run(None, feeds)
                r.memory_mb = max(0.0, _rss_mb() - before)
                r.file_mb = Path(path).stat().st_size / 1e6
                if model is not None:
                    costs = count_costs(model, shapes)
                    r.macs, r.params = (costs.macs if not costs.unresolved else None), costs.params
                loaded.append((r, sess, feeds))
            except (OnnxPruneError, Exception) as e:  # noqa: BLE001 - one bad model never stops the others
                r.error = " ".join(str(e).split())[:300] or type(e).__name__
        deadline = time.perf_counter() + options.seconds if options.seconds else None
        rounds = 0
        while loaded and (rounds < options.runs if deadline is None else
                          (time.perf_counter() < deadline or rounds < 5)):
            order = loaded[rounds % len(loaded):] + loaded[: rounds % len(loaded)]
            for r, sess, feeds in order:
                start = time.perf_counter()
                sess.run(None, feeds)
                r.times.append(time.perf_counter() - start)
            rounds += 1
            done += 1
            if progress:
                progress(min(done, total_rounds), total_rounds)
        _compare(loaded, options)
        results.extend(group)
    return results


def _compare(loaded: list[tuple[ModelResult, ort.InferenceSession, dict[str, np.ndarray]]],
             options: BenchOptions) -> None:
    for r, _, _ in loaded:
        r.latency = Summary.of(r.times)
    if not loaded:
        return
    base, base_sess, base_feeds = loaded[0]
    data: Dataset | None = None
    if options.data is not None:
        model = None if base.path.endswith(".ort") else normalize(read_model(base.path, ort_artifact=True), copy=False)
        data = load_data(options.data, model, options.preprocess, options.data_limit) if model is not None else None
    base_out = base_sess.run(None, base_feeds)[0]
    base_data = _predict(base_sess, data) if data is not None else None
    for r, sess, feeds in loaded:
        r.speedup = paired_speedup(base.times, r.times, seed=options.seed)   # one entry per round each
        try:
            out = sess.run(None, base_feeds)[0] if feeds.keys() == base_feeds.keys() and all(
                feeds[k].shape == base_feeds[k].shape for k in feeds) else None
            if out is not None and out.shape == base_out.shape:  # random inputs: continuous measures only (a
                diff = out.astype(np.float64) - base_out             # top-1 on one random sample is 0% or 100%)
                r.max_abs_diff = float(np.abs(diff).max())
                r.rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(base_out)), 1e-30))
            if data is not None and base_data is not None:
                pred = _predict(sess, data)
                if pred.shape == base_data.shape and pred.ndim == 2:
                    r.top1_agreement = float((pred.argmax(1) == base_data.argmax(1)).mean())
                    if data.labels is not None:
                        r.accuracy = float((pred.argmax(1) == data.labels).mean())
        except Exception as e:  # noqa: BLE001 - a model that runs on random inputs but not on the data
            r.error = f"comparison failed: {' '.join(str(e).split())[:200]}"


def _predict(sess: ort.InferenceSession, data: Dataset) -> np.ndarray:
    fixed = sess.get_inputs()[0].shape[0]
    size = fixed if isinstance(fixed, int) and fixed > 0 else 64
    outs = [sess.run(None, b)[0] for b in data.batches(size) if len(next(iter(b.values()))) == size
            or not isinstance(fixed, int)]
    return np.concatenate(outs)
