"""Run one model through a recipe, in a private work folder published atomically as ``OUTDIR/<name>/``.

Steps call the CLI's own subcommands (same parsing, same checks); their console output goes to ``log.txt``.
The folder always ends with ``result.json`` (status, error, steps done, before/after figures): on success and
on failure alike, so a failed model can be inspected; ``--resume`` reruns anything not ``ok``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxprune.errors import OnnxPruneError, OutputPathError
from onnxprune.paths import is_marked, mark
from onnxprune.limits import is_out_of_memory
from onnxprune.progress import Stage, stage
from onnxprune.recipe import Step, options_of, output_argv, step_argv
from onnxprune.zoo.jobs import WORK_FOLDER, ModelJob

RESULT = "result.json"


class StepFailed(Exception):
    """A step returned a non-zero exit code without raising (e.g. bench with a model that could not run)."""


@dataclass
class ModelResult:
    name: str
    path: str
    status: str                         # ok | failed | timeout | resumed | not run
    error: str = ""
    steps_done: list[str] = field(default_factory=list)
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None
    bytes_before: int | None = None
    bytes_after: int | None = None      # the final .onnx
    compressed_bytes: int | None = None  # the .onnxz, when the recipe compresses
    latency_ratio: float | None = None   # original / final median latency, when the recipe benches
    seconds: float = 0.0
    key: str = ""
    final_model: str = ""               # relative to the model's folder

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _stats(path: str, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[int | None, int | None]:
    """(MACs, params) at the given input shapes (batch 1 for a dynamic batch); MACs None when other dims are
    dynamic and not given (pass input_shapes in a manifest), both None when the model cannot be measured."""
    try:
        import onnxprune
        from onnxprune.verify import InputSpec

        summary = onnxprune.inspect(onnxprune.load(path), InputSpec(dict(shapes)))
        return (None if summary.flops_unresolved else summary.flops), summary.params
    except Exception:  # figures are best effort: a model that cannot be measured still runs
        return None, None


def _run_cli(argv: list[str]) -> None:
    from onnxprune.cli.main import build_parser

    print(f"$ onnxprune {' '.join(argv)}", flush=True)
    args = build_parser().parse_args(argv)
    rc = args.run(args)
    if rc:
        raise StepFailed(f"exit code {rc}")


def _common_args(step: Step, job: ModelJob) -> list[str]:
    """--data, --eval-data and --input-shape from the manifest/recipe, for steps that take them and did not set
    them. ``bench`` measures on the held-out data when there is some (it reports accuracy), else on --data."""
    known = options_of(step.kind)
    argv: list[str] = []
    data = job.recipe.eval_data if step.kind == "bench" and job.recipe.eval_data else job.recipe.data
    if data and "data" in known and step.option("data") is None:
        argv += ["--data", data]
    if job.recipe.eval_data and "eval-data" in known and step.option("eval-data") is None:
        argv += ["--eval-data", job.recipe.eval_data]
    if job.input_shapes and "input-shape" in known and step.option("input-shape") is None:
        for name, dims in job.input_shapes:
            argv += ["--input-shape", f"{name}={'x'.join(map(str, dims))}"]
    return argv


def _steps(job: ModelJob, work: Path, result: ModelResult) -> str:
    """Run every step; returns the final model path. Raises on the first failing step (named)."""
    with stage(job.name, total=len(job.recipe.steps), unit="steps") as progress:
        return _run_steps(job, work, result, progress)


def preflight(job: ModelJob) -> str | None:
    """What would fail late and can be told from the model now: ``emit --target mobile`` needs every input's
    shape fixed (static in the model, ``input_shapes`` in the manifest, or ``input-shape`` in the step)."""
    mobile = [(i, s) for i, s in enumerate(job.recipe.steps) if s.kind == "emit" and "mobile" in
              (s.option("target") if isinstance(s.option("target"), list) else [s.option("target") or "cpu"])]
    if not mobile:
        return None
    import onnx

    try:
        model = onnx.load(job.path, load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model fails in its first step, with the reader's message
        return None
    given = {name for name, _ in job.input_shapes}
    initializers = {t.name for t in model.graph.initializer}
    for i, step in mobile:
        given_here = given | {str(v).split("=")[0] for v in (step.option("input-shape") or [])}
        for vi in model.graph.input:
            dims = vi.type.tensor_type.shape.dim
            dynamic = [d.dim_param or "?" for d in dims if not d.dim_value]
            if vi.name not in initializers and vi.name not in given_here and dynamic:
                return (f"step {i + 1:02d}-emit: --target mobile needs fixed input shapes; input {vi.name!r} has "
                        f"dynamic dims ({', '.join(dynamic)}): give input_shapes in the manifest, --input-shape to "
                        f"run, or input-shape in the step")
    return None


def _run_steps(job: ModelJob, work: Path, result: ModelResult, progress: Stage) -> str:
    problem = preflight(job)
    if problem:
        raise StepFailed(problem)
    current = job.path
    sensitivity_dir: str | None = None
    for i, step in enumerate(job.recipe.steps):
        tag = f"{i + 1:02d}-{step.kind}"
        started = time.perf_counter()
        progress.advance(tag, n=0)
        extra = _common_args(step, job)
        try:
            if step.kind in ("fold", "prune"):
                out = work / f"{tag}.onnx"
                argv = [step.kind, current, "-o", str(out)]
                if step.kind == "prune":
                    argv += ["--report", str(work / f"{tag}.json")]
                    if step.option("sensitivity") == "previous":
                        if sensitivity_dir is None:
                            raise StepFailed("sensitivity: previous, but no sensitivity step ran before")
                        argv += ["--sensitivity", sensitivity_dir]
                _run_cli(argv + step_argv(step, {"sensitivity"} if step.option("sensitivity") == "previous"
                                          else set()) + output_argv(step, work, tag) + extra)
                current = str(out)
            elif step.kind == "finetune":
                out = work / f"{tag}.onnx"
                teacher = [] if step.option("teacher") else ["--teacher", job.path]   # the model as it came in
                _run_cli(["finetune", current, "-o", str(out), "--report", str(work / f"{tag}.json")] + teacher
                         + step_argv(step) + extra)
                current = str(out)
            elif step.kind == "sensitivity":
                sensitivity_dir = str(work / tag)
                _run_cli(["sensitivity", current, "-o", sensitivity_dir] + step_argv(step) + extra)
            elif step.kind == "compress":
                out = work / f"{tag}.onnxz"
                argv = ["compress", current, "-o", str(out), "--report", str(work / f"{tag}.json")]
                _run_cli(argv + step_argv(step) + output_argv(step, work, tag) + extra)
                result.compressed_bytes = out.stat().st_size
            elif step.kind == "emit":
                targets = step.option("target") or ["cpu"]
                for target in targets if isinstance(targets, list) else [targets]:
                    _run_cli(["emit", current, "--target", str(target), "-o", str(work / f"{tag}-{target}")]
                             + step_argv(step, {"target"}) + extra)
            elif step.kind == "bench":
                report = work / f"{tag}.json"
                _run_cli(["bench", job.path, current, "--json", str(report)] + step_argv(step) + extra)
                rows = json.loads(report.read_text())["results"]
                speed = rows[1].get("speedup") if len(rows) > 1 else None
                result.latency_ratio = speed["ratio"] if speed else None
        except (OnnxPruneError, StepFailed) as e:
            progress.note(f"{job.name}: step {tag} failed after {time.perf_counter() - started:.1f} s")
            raise StepFailed(f"step {tag}: {e}") from None
        result.steps_done.append(step.kind)
        progress.advance(tag)
        progress.note(f"{job.name}: step {tag} done in {time.perf_counter() - started:.1f} s")
    return current


def run_model(job: ModelJob, outdir: str, key: str | None = None) -> dict[str, object]:
    """Run ``job`` in a work folder under ``OUTDIR/.onnxprune-work/`` and publish it as ``OUTDIR/<name>/``;
    never raises for a model's own failure. Returns the result as a dict (picklable, for worker processes and
    Ray tasks)."""
    out = Path(outdir)
    final = out / job.name
    if final.exists() and not is_marked(final):
        return ModelResult(job.name, job.path, "failed", f"{final} exists and was not written by onnxprune; left "
                           f"untouched", key=key or job.key()).to_dict()
    work = out / WORK_FOLDER / f"{job.name}.{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    mark(work, "zoo-model")
    result = run_model_in(job, work, key)
    publish(work, final)
    return result


def run_model_in(job: ModelJob, work: Path, key: str | None = None) -> dict[str, object]:
    """Run ``job`` with every output, ``log.txt`` and ``result.json`` written into the folder ``work``."""
    start = time.perf_counter()
    result = ModelResult(job.name, job.path, "failed", key=key or job.key())
    try:
        result.bytes_before = os.path.getsize(job.path)
    except OSError:
        pass
    with open(work / "log.txt", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            result.macs_before, result.params_before = _stats(job.path, job.input_shapes)
            final = _steps(job, work, result)
            result.status = "ok"
            if final != job.path:
                result.final_model = os.path.relpath(final, work)
                result.bytes_after = os.path.getsize(final)
                result.macs_after, result.params_after = _stats(final, job.input_shapes)
            else:
                result.bytes_after, result.macs_after, result.params_after = \
                    result.bytes_before, result.macs_before, result.params_before
        except StepFailed as e:
            result.error = str(e)
        except Exception as e:  # a bug in a step: recorded, the zoo goes on
            detail = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            result.error = f"out of memory ({detail})" if is_out_of_memory(e) else f"internal error: {detail}"
            traceback.print_exc()
    result.seconds = time.perf_counter() - start
    (work / RESULT).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result.to_dict()


def publish(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` (a rename; an older folder is moved aside first, then removed). A ``final``
    that onnxprune did not write (no marker) is never replaced."""
    old = None
    if final.exists():
        if not is_marked(final):
            raise OutputPathError(f"{final}: exists and was not written by onnxprune; left untouched")
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def previous_result(outdir: str, name: str) -> dict[str, object] | None:
    try:
        return json.loads((Path(outdir) / name / RESULT).read_text())
    except (OSError, ValueError):
        return None
