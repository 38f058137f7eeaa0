"""Run one model through a recipe, in a private work folder published atomically as ``OUTDIR/<name>/``.

Each recipe step becomes a typed step (:mod:`onnxprune.steps`: the objects the CLI builds from its arguments)
and runs in this process; their progress and notes go to ``log.txt``, their results into ``result.json``.
The folder always ends with ``result.json`` (status, error, steps done, before/after figures): on success and
on failure alike, so a failed model can be inspected; ``--resume`` reruns anything not ``ok``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxprune.emission.outdir import check_output_dir, staged_output_dir
from onnxprune.errors import OnnxPruneError, OptionStyle, OutputPathError, UsageError
from onnxprune.limits import is_out_of_memory
from onnxprune.paths import check_paths, is_marked, mark, regular_file
from onnxprune.progress import Stage, stage
from onnxprune.recipe import OUTPUT_OPTIONS, Recipe, Step, check_requirements
from onnxprune.steps import STEPS, StepContext, StepResult, options_as
from onnxprune.zoo.jobs import WORK_FOLDER, ModelJob

RESULT = "result.json"


class Status(enum.StrEnum):
    """A model's outcome in a zoo run (a ``str``: it is written to JSON and compared as its value)."""

    OK = "ok"
    RESUMED = "resumed"      # ok in an earlier run with the same recipe and model: not run again
    FAILED = "failed"
    TIMEOUT = "timeout"
    NOT_RUN = "not run"      # the run was interrupted before it started

    @property
    def succeeded(self) -> bool:
        return self in (Status.OK, Status.RESUMED)


class StepFailed(Exception):
    """A step returned a non-zero exit code without raising (e.g. bench with a model that could not run)."""


@dataclass
class ModelResult:
    name: str
    path: str
    status: Status
    error: str = ""
    steps_done: list[str] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)   # per step: kind, model, files, seconds
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


def _options(step: Step, job: ModelJob, work: Path, tag: str, previous: dict[str, str]) -> dict[str, object]:
    """The step's recipe options, completed by the runner: ``data``, ``eval-data`` and ``input-shape`` from the
    manifest/recipe where the step takes them and did not set them (``bench`` measures on the held-out data when
    there is some: it reports accuracy), output options set to true as paths in ``work`` named after ``tag``, and
    ``sensitivity: previous`` as the folder of the last sensitivity step, ``latency-table: previous`` as the
    table of the last profile step."""
    flags = STEPS[step.kind].flags()
    options: dict[str, object] = {}
    for key, value in step.options:
        if key in OUTPUT_OPTIONS:
            if value is True and key in flags:
                options[key] = str(work / f"{tag}.{OUTPUT_OPTIONS[key]}")
            continue
        options[key] = value
    data = job.recipe.eval_data if step.kind == "bench" and job.recipe.eval_data else job.recipe.data
    if data and "data" in flags and step.option("data") is None:
        options["data"] = data
    if job.recipe.eval_data and "eval-data" in flags and step.option("eval-data") is None:
        options["eval-data"] = job.recipe.eval_data
    if job.input_shapes and "input-shape" in flags and step.option("input-shape") is None:
        options["input-shape"] = [f"{name}={'x'.join(map(str, dims))}" for name, dims in job.input_shapes]
    for key, kind in (("sensitivity", "sensitivity"), ("latency-table", "profile")):
        if step.kind == "prune" and step.option(key) == "previous":
            if kind not in previous:
                raise StepFailed(f"{key}: previous, but no {kind} step ran before")
            options[key] = previous[kind]
    return options


def _run(step: Step, options: dict[str, object], ctx: StepContext) -> StepResult:
    print(f"$ onnxprune {step.kind} {ctx.model}" + "".join(f" --{k} {v}" for k, v in options.items()), flush=True)
    result = STEPS[step.kind].from_options(options).run(ctx)
    for note in result.notes:
        print(f"onnxprune: warning: {options_as(note, OptionStyle.KEY)}", flush=True)
    if result.exit_code:
        raise StepFailed(f"exit code {result.exit_code}")
    return result


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
                return (f"step {i + 1:02d}-emit: `target` mobile needs fixed input shapes; input {vi.name!r} has "
                        f"dynamic dims ({', '.join(dynamic)}): give input_shapes in the manifest, `input_shape` to "
                        f"run, or input-shape in the step")
    return None


def _run_steps(job: ModelJob, work: Path, result: ModelResult, progress: Stage) -> str:
    problem = preflight(job)
    if problem:
        raise StepFailed(options_as(problem, OptionStyle.KEY))
    current = Path(job.path)
    original = Path(job.path)   # the model as it came in: finetune's default teacher, bench's baseline
    previous: dict[str, str] = {}   # step kind -> what its last run wrote (for "previous" options)
    for i, step in enumerate(job.recipe.steps):
        tag = f"{i + 1:02d}-{step.kind}"
        started = time.perf_counter()
        progress.advance(tag, n=0)
        try:
            options = _options(step, job, work, tag, previous)
            report = work / f"{tag}.json"
            if step.kind in ("fold", "prune", "finetune"):
                out = work / f"{tag}.onnx"
                done = _run(step, options, StepContext(current, out, None if step.kind == "fold" else report,
                                                       original))
                current = done.model or out
            elif step.kind == "sensitivity":
                previous["sensitivity"] = str(work / tag)
                done = _run(step, options, StepContext(current, work / tag, None, original))
            elif step.kind == "profile":
                previous["profile"] = str(work / f"{tag}.json")
                done = _run(step, options, StepContext(current, work / f"{tag}.json", None, original))
            elif step.kind == "compress":
                out = work / f"{tag}.onnxz"
                done = _run(step, options, StepContext(current, out, report, original))
                result.compressed_bytes = out.stat().st_size
            elif step.kind == "emit":
                targets = options.pop("target", None) or ["cpu"]
                for target in targets if isinstance(targets, list) else [targets]:
                    done = _run(step, {**options, "target": target},
                                StepContext(current, work / f"{tag}-{target}", None, original))
                    result.steps.append(_record(done, work, started))
            elif step.kind == "bench":
                done = _run(step, options, StepContext(current, None, report, original, (original, current)))
                result.latency_ratio = done.report["latency_ratio"]
        except (OnnxPruneError, StepFailed) as e:
            progress.note(f"{job.name}: step {tag} failed after {time.perf_counter() - started:.1f} s")
            raise StepFailed(f"step {tag}: {options_as(str(e), OptionStyle.KEY)}") from None
        if step.kind != "emit":
            result.steps.append(_record(done, work, started))
        result.steps_done.append(step.kind)
        progress.advance(tag)
        progress.note(f"{job.name}: step {tag} done in {time.perf_counter() - started:.1f} s")
    return str(current)


def _record(done: StepResult, work: Path, started: float) -> dict[str, object]:
    """A step's result as ``result.json`` keeps it: kind, the model it made, the files it wrote (relative)."""
    return {"kind": done.kind, "model": os.path.relpath(done.model, work) if done.model else None,
            "files": [os.path.relpath(f, work) for f in done.files],
            "seconds": round(time.perf_counter() - started, 2)}


def run_recipe(recipe: Recipe, model: str | Path, output: str | Path,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, object]:
    """Run one model through ``recipe`` into the folder ``output`` (new, empty, or one onnxprune wrote: it is
    replaced atomically when the run ends). Returns the result (``status``, ``error``, ``steps``...); a failing
    step is recorded there, not raised. Raises for what can be told before any step runs: bad paths, missing
    data, a mobile emit without fixed input shapes."""
    output = Path(output)
    regular_file(Path(model), "ONNX model")
    check_requirements(recipe)
    check_paths(inputs=[model, recipe.data, recipe.eval_data], folders=[("-o", output)])
    check_output_dir(output, force=True)
    shapes = tuple((k, tuple(v)) for k, v in (input_shapes or {}).items())
    job = ModelJob(output.name, str(model), recipe, shapes)
    problem = preflight(job)
    if problem:
        raise UsageError(f"{model}: {problem}")
    with staged_output_dir(output, force=True, command="run") as folder:
        return run_model_in(job, folder)


def run_model(job: ModelJob, outdir: str, key: str | None = None) -> dict[str, object]:
    """Run ``job`` in a work folder under ``OUTDIR/.onnxprune-work/`` and publish it as ``OUTDIR/<name>/``;
    never raises for a model's own failure. Returns the result as a dict (picklable, for worker processes and
    Ray tasks)."""
    out = Path(outdir)
    final = out / job.name
    if final.exists() and not is_marked(final):
        return ModelResult(job.name, job.path, Status.FAILED, f"{final} exists and was not written by onnxprune; left "
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
    result = ModelResult(job.name, job.path, Status.FAILED, key=key or job.key())
    try:
        result.bytes_before = os.path.getsize(job.path)
    except OSError:
        pass
    with open(work / "log.txt", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            result.macs_before, result.params_before = _stats(job.path, job.input_shapes)
            final = _steps(job, work, result)
            result.status = Status.OK
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
