"""A zoo run: resume, dispatch to a backend, collect results in input order, write the summary.

``resume``: a model whose ``OUTDIR/<name>/result.json`` says ``ok`` with the same key (model bytes, recipe,
input shapes, onnxprune version) is not run again; its row is reported as ``resumed``. An interrupted run
(Ctrl-C) stops its workers, writes the summary (``not run`` for the rest) and leaves no half-written model
folder: each model is published by a rename only when it is finished.
"""

from __future__ import annotations

import enum
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxprune.paths import is_marked, mark
from onnxprune.progress import stage
from onnxprune.zoo.backends import Limits, run_local, run_ray
from onnxprune.zoo.jobs import WORK_FOLDER, ModelJob
from onnxprune.zoo.model_run import ModelResult, Status, previous_result
from onnxprune.zoo.outdir import locked_outdir
from onnxprune.zoo.summary import totals, write_summary


class Backend(enum.Enum):
    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True)
class ZooOptions:
    backend: Backend = Backend.LOCAL
    jobs: int = 1
    limits: Limits = Limits()
    resume: bool = False
    address: str | None = None        # Ray cluster address


@dataclass(frozen=True)
class ZooRun:
    rows: list[dict[str, object]]
    totals: dict[str, object]
    interrupted: KeyboardInterrupt | None     # the interrupt (Ctrl-C, SIGTERM) that stopped the run early

    @property
    def failed(self) -> int:
        return int(self.totals[Status.FAILED]) + int(self.totals[Status.TIMEOUT])


def run_zoo(jobs: list[ModelJob], outdir: Path, options: ZooOptions,
            on_event: Callable[[str, ModelJob | None, dict[str, object] | None], None] = lambda *a: None) -> ZooRun:
    """Run every job; ``on_event(kind, job, result)`` with kind ``start`` / ``done`` (for a progress bar).
    ``outdir`` is locked for the run (see :mod:`onnxprune.zoo.outdir`)."""
    with locked_outdir(outdir), stage("zoo", total=len(jobs), unit="models") as progress:

        def report(kind: str, job: ModelJob | None, result: dict[str, object] | None) -> None:
            if kind == "done" and result is not None:
                progress.advance(f"{result['name']}: {result['status']}")
                failed = not Status(result["status"]).succeeded
                progress.note(f"[{progress.done}/{len(jobs)}] {result['name']}: {result['status']} "
                              f"({float(result['seconds']):.1f} s)" + (f": {result['error']}" if failed else ""),
                              always=failed)
            on_event(kind, job, result)

        return _run(jobs, outdir, options, report)


def _run(jobs: list[ModelJob], outdir: Path, options: ZooOptions,
         on_event: Callable[[str, ModelJob | None, dict[str, object] | None], None]) -> ZooRun:
    start = time.perf_counter()
    wall_start = time.time()
    results: dict[str, dict[str, object]] = {}
    todo: list[tuple[ModelJob, str]] = []
    for job in jobs:
        key = job.key()
        previous = previous_result(str(outdir), job.name) if options.resume else None
        if previous and previous.get("status") == Status.OK and previous.get("key") == key:
            results[job.name] = {**previous, "status": Status.RESUMED}
            on_event("done", job, results[job.name])
        else:
            todo.append((job, key))
    by_name = {job.name: job for job, _ in todo}
    interrupted: KeyboardInterrupt | None = None
    if options.backend is Backend.RAY:
        stream = run_ray(todo, str(outdir), options.address, options.jobs, options.limits,
                         lambda j: on_event("start", j, None))
    else:
        stream = run_local(todo, str(outdir), options.jobs, options.limits, lambda j: on_event("start", j, None))
    try:
        for result in stream:
            name = str(result["name"])
            results[name] = result
            if result["status"] == Status.TIMEOUT or str(result.get("error", "")).startswith("worker "):
                _record_failure(outdir, result)
            on_event("done", by_name.get(name), result)
    except KeyboardInterrupt as e:
        interrupted = e
        stream.close()
    if interrupted is not None:  # a worker may have published its model just before the interrupt reached us
        for job, key in todo:
            if job.name not in results:
                done = _published_since(outdir, job.name, key, wall_start)
                if done is not None:
                    results[job.name] = done
    rows = [results.get(job.name) or ModelResult(job.name, job.path, Status.NOT_RUN).to_dict() for job in jobs]
    summary = totals(rows, time.perf_counter() - start, options.backend.value, options.jobs)
    write_summary(outdir, rows, summary)
    return ZooRun(rows, summary, interrupted)


def _published_since(outdir: Path, name: str, key: str, since: float) -> dict[str, object] | None:
    path = outdir / name / "result.json"
    try:
        if path.stat().st_mtime < since:
            return None
    except OSError:
        return None
    previous = previous_result(str(outdir), name)
    return previous if previous is not None and previous.get("key") == key else None


def _record_failure(outdir: Path, result: dict[str, object]) -> None:
    """A model whose worker was killed published nothing: leave its result.json, and the log the worker had
    written so far, so the folder explains itself."""
    import json

    from onnxprune.io import write_text_atomic

    folder = outdir / str(result["name"])
    if folder.exists() and not is_marked(folder):
        return
    folder.mkdir(exist_ok=True)
    mark(folder, "zoo-model")
    write_text_atomic(folder / "result.json", json.dumps(result, indent=2) + "\n")
    logs = sorted((outdir / WORK_FOLDER).glob(f"{result['name']}.*/log.txt"), key=lambda p: p.stat().st_mtime)
    if logs:
        shutil.copyfile(logs[-1], folder / "log.txt")
