"""Where models run: local worker processes, or Ray tasks. Both yield the same result dicts.

Local: one fresh process per model (``spawn``), at most ``jobs`` at a time, so a model that crashes the
interpreter (a native abort, the kernel's OOM killer) or hangs takes only itself down. ``timeout`` kills a model
after that many seconds; ``memory_mb`` caps each worker's address space (a model over it fails with "out of
memory" instead of taking the machine down).

Ray: each model is a Ray task (``num_cpus=1``) on the cluster at ``address``, at most ``jobs`` in flight;
per-model timeouts cancel the task (the memory cap is the cluster's own). Workers write to ``OUTDIR`` directly,
so on a multi-node cluster ``OUTDIR`` and the models must be on a filesystem every node sees (as with any Ray
job writing files). onnxprune does not start a Ray of its own: Ray's servers (GCS, raylet, workers) listen on
every interface without authentication, even when told the node is 127.0.0.1 (checked with Ray 2.60), so a
run-local Ray would expose the machine. The cluster at ``address`` is the user's own security boundary; on one
machine the local backend does the same work without listening on the network.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from onnxprune.errors import UsageError
from onnxprune.zoo.jobs import ModelJob
from onnxprune.zoo.model_run import ModelResult, Status, run_model

Result = dict[str, object]


@dataclass(frozen=True)
class Limits:
    timeout: float | None = None      # seconds per model
    memory_mb: int | None = None      # address-space cap per local worker


def _failed(job: ModelJob, key: str, status: Status, error: str, seconds: float) -> Result:
    return ModelResult(job.name, job.path, status, error, key=key, seconds=seconds).to_dict()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the zoo process dies, however it dies (even SIGKILL), so no
    orphan keeps running past the run's timeout and memory limits or publishes after the summary."""
    import ctypes
    import ctypes.util
    import signal

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _worker(job: ModelJob, outdir: str, key: str, memory_mb: int | None, parent_pid: int, conn) -> None:
    import os
    import signal

    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops workers
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = run_model(job, outdir, key)
        try:
            conn.send(result)
        except (BrokenPipeError, EOFError, OSError):  # the parent stopped listening: nothing to report to
            pass
    finally:
        conn.close()


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start spawned workers without importing the caller's ``__main__`` again.

    ``spawn`` normally re-runs the main script in every child, so a script calling ``run_zoo`` at its top level
    (no ``if __name__ == "__main__":`` guard) would start a zoo inside each worker. Workers only run onnxprune's
    own code, with arguments of onnxprune's own types, so the main module is hidden from multiprocessing while a
    worker starts."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    try:
        for k in saved:
            setattr(main, k, None)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def run_local(jobs: list[tuple[ModelJob, str]], outdir: str, workers: int, limits: Limits,
              on_start: Callable[[ModelJob], None] = lambda j: None) -> Iterator[Result]:
    """Run (job, key) pairs in worker processes; yields each result as it completes. On KeyboardInterrupt the
    running workers are killed (their unpublished work folders are left under OUTDIR/.work and cleaned later)."""
    ctx = mp.get_context("spawn")
    pending = list(jobs)
    running: dict[object, tuple[ModelJob, str, object, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < max(workers, 1):
                job, key = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(job, outdir, key, limits.memory_mb, os.getpid(), child),
                                   daemon=True)
                with _main_not_reimported():
                    proc.start()
                child.close()
                running[proc] = (job, key, parent, time.monotonic())
                on_start(job)
            done = []
            for proc, (job, key, conn, started) in running.items():
                elapsed = time.monotonic() - started
                if conn.poll():
                    try:
                        result = conn.recv()
                    except (EOFError, OSError):
                        result = None
                    proc.join(5)
                    done.append(proc)
                    yield result if result is not None else _died(job, key, proc, elapsed)
                elif not proc.is_alive():
                    done.append(proc)
                    yield _died(job, key, proc, elapsed)
                elif limits.timeout and elapsed > limits.timeout:
                    proc.kill()
                    proc.join(5)
                    done.append(proc)
                    yield _failed(job, key, Status.TIMEOUT, f"timed out after {limits.timeout:g} s", elapsed)
            for proc in done:
                running.pop(proc)[2].close()
            if not done:
                time.sleep(0.05)
    finally:
        for proc in running:
            proc.kill()
        for proc in running:
            proc.join(5)
        for _, _, conn, _ in running.values():
            conn.close()


def _died(job: ModelJob, key: str, proc, elapsed: float) -> Result:
    code = proc.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    hint = " (out of memory?)" if code in (-9, -6) else ""
    return _failed(job, key, Status.FAILED, f"worker {how}{hint}", elapsed)


def run_ray(jobs: list[tuple[ModelJob, str]], outdir: str, address: str | None, workers: int, limits: Limits,
            on_start: Callable[[ModelJob], None] = lambda j: None) -> Iterator[Result]:
    """Run (job, key) pairs as Ray tasks; yields each result as it completes."""
    try:
        import ray
    except ImportError:
        raise UsageError("`backend` ray needs Ray: pip install 'onnxprune[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if not address:
            raise UsageError("`backend` ray needs `address` of a Ray cluster you run (onnxprune does not start one: "
                             "a local Ray listens on every interface without authentication); on one machine "
                             "use `backend` local")
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {e}") from None
    task = ray.remote(num_cpus=1, max_retries=0)(run_model)
    pending = list(jobs)
    refs: dict[object, tuple[ModelJob, str, float]] = {}
    try:
        while pending or refs:
            while pending and len(refs) < max(workers, 1):  # at most --jobs in flight: the timeout clock is fair
                job, key = pending.pop(0)
                refs[task.remote(job, outdir, key)] = (job, key, time.monotonic())
                on_start(job)
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                job, key, started = refs.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as e:
                    yield _failed(job, key, Status.FAILED, f"ray task failed: {type(e).__name__}",
                                  time.monotonic() - started)
            if limits.timeout:
                for ref, (job, key, started) in list(refs.items()):
                    if time.monotonic() - started > limits.timeout:
                        ray.cancel(ref, force=True)
                        refs.pop(ref)
                        yield _failed(job, key, Status.TIMEOUT, f"timed out after {limits.timeout:g} s",
                                      time.monotonic() - started)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
