"""Helpers shared by the benchmark scripts: machine description, digits data, interleaved timing."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
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


def zoo_arguments(description: str, name: str, windows: int) -> argparse.ArgumentParser:
    """The options of a benchmark over zoo models × thread counts in windows: --out, --runs, --windows,
    --models, --threads, --name (``name``: the results' file name)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--windows", type=int, default=windows)
    ap.add_argument("--models", default=None, help="zoo models (default: all)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--name", default=name)
    return ap


def zoo_cells(models: str | None, threads: str, measure: Callable[[str, int], list[dict[str, object]]],
              describe: Callable[[list[dict[str, object]]], str]) -> list[dict[str, object]]:
    """The rows ``measure(model, threads)`` gives for every zoo model (``models``: comma-separated, None: all) and
    thread count, each cell printed by ``describe``; a cell that fails is printed with its error and skipped
    (the others still run)."""
    from models.architectures import ZOO

    rows: list[dict[str, object]] = []
    for name in [m for m in (models.split(",") if models is not None else list(ZOO)) if m]:
        for n in (int(t) for t in threads.split(",")):
            try:
                got = measure(name, n)
            except Exception as e:   # noqa: BLE001 - a benchmark reports a failing cell and goes on
                print(f"{name} ({n} threads): failed: {type(e).__name__}: {e}", flush=True)
                continue
            rows += got
            print(f"{name} ({n} threads): {describe(got)}", flush=True)
    return rows


def write_results(out: Path, name: str, rows: list[dict[str, object]], markdown: str) -> None:
    """``name``.json (the rows) and ``name``.md under ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(rows, indent=2) + "\n"), (".md", markdown)):
        path = out / f"{name}{suffix}"
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"wrote {out / (name + '.md')}")
