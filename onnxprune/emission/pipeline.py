"""``emit``: write what an ONNX Runtime deployment should load, check every artifact, and describe it.

- cpu:    the model optimized offline by ORT at a portable level (EXTENDED: constant folding and fusions that
          run on any x86/ARM CPU); ``for_this_machine`` uses ALL (adds the machine-specific NCHWc layout).
          Optional int8 (static QDQ per-channel with calibration data, or dynamic).
- cuda:   float16 (inputs/outputs float32, overflow-prone ops float32), BN folded in float32 first.
- mobile: fixed input shapes, ORT format (fixed or runtime optimization style), the required-operators config
          for a reduced build, and the NNAPI/CoreML usability report. Optional int8 as for cpu.

Every artifact (the .ort too) is loaded back in ONNX Runtime and compared with the source model on seeded
inputs (and on ``--data`` when given) before anything is reported; the folder appears only when all passed.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune import __version__
from onnxprune.api import fold, load
from onnxprune.data import Dataset, load_data
from onnxprune.emission.fp16 import FP16_BLOCK_LIST, to_float16
from onnxprune.emission.int8_search import default_float_nodes, search
from onnxprune.emission.manifest import Agreement, FileEntry, Manifest, sha256
from onnxprune.emission.mobile import fix_shapes, to_ort_format, usability_report
from onnxprune.emission.options import CalibrationMethod, EmitOptions, Int8, Target
from onnxprune.emission.outdir import check_output_dir, staged_output_dir
from onnxprune.emission.quantize import int8_role, prepare, quantize, quantize_prepared
from onnxprune.errors import UsageError, VerificationError
from onnxprune.flops import count_costs
from onnxprune.io import save_model
from onnxprune.metrics import (
    LOWER_IS_BETTER,
    default_metric,
    metrics,
    outputs,
    parse_metric,
    sequence_metrics,
)
from onnxprune.paths import check_paths
from onnxprune.progress import stage, timing
from onnxprune.verify import (
    InputSpec,
    Reference,
    make_session,
    random_inputs,
    resolve_input_shapes,
    run,
    with_batch,
)

#: relative tolerance (max abs diff / max |output|) per artifact precision; int8 is measured, not bounded
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
CUDA_PROVIDER_OPTIONS = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}
DATA_SAMPLES = 512


@dataclass(frozen=True)
class EmitResult:
    folder: Path
    manifest: Manifest


def _check_options(options: EmitOptions) -> None:
    if options.int8 is not Int8.NONE and options.target is Target.CUDA:
        raise UsageError("`int8` is for `target` cpu or mobile (CUDA int8 needs TensorRT, not emitted here)")
    if options.max_drop is not None and options.int8 is not Int8.STATIC:
        raise UsageError("`max_drop` is for `int8` static")
    if options.max_drop is not None and options.data is None and options.eval_data is None:
        raise UsageError("`max_drop` needs data to measure on: `eval_data` (held-out) or `data`")
    if options.calibration_method is CalibrationMethod.AUTO and options.data is None and options.eval_data is None:
        raise UsageError("`calibration_method` auto measures each method: it needs `eval_data` or `data`")
    if options.calibration_method is not CalibrationMethod.MINMAX and options.int8 is not Int8.STATIC:
        raise UsageError("`calibration_method` is for `int8` static")
    if options.max_drop is not None and options.max_drop < 0:
        raise UsageError(f"`max_drop` {options.max_drop}: expected points >= 0")
    if options.int8 is Int8.STATIC and options.data is None and not options.random_calibration:
        raise UsageError("`int8` static needs calibration data: `data` FILE.npz (arrays keyed by input name), "
                         "or `calibration` random to calibrate on random inputs (not recommended)")


def _random_dataset(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], n: int) -> Dataset:
    one = {k: (1,) + v[1:] for k, v in shapes.items()}
    batches = [random_inputs(model, one, seed=i) for i in range(n)]
    return Dataset({k: np.concatenate([b[k] for b in batches]) for k in one}, None)


def _session(path: Path) -> ort.InferenceSession:
    """As deployed: all graph optimizations on (int8 QDQ then runs on integer kernels, not simulated)."""
    return make_session(str(path), optimize=True)


def _outputs(session: ort.InferenceSession, data: Dataset, fixed_batch: int | None) -> np.ndarray:
    size = fixed_batch or 64
    outs = [run(session, batch)[session.get_outputs()[0].name] for batch in data.batches(size)
            if fixed_batch is None or len(next(iter(batch.values()))) == fixed_batch]
    return np.concatenate(outs)


def _agreement_random(reference: Reference, artifact: ort.InferenceSession, label: str) -> Agreement:
    """The artifact against the source on seeded inputs, by the tolerance rule of ``onnxprune.verify``."""
    ref, got = reference.outputs, run(artifact, reference.feeds)
    comparison = reference.compare_results(got)
    top = max(float(np.abs(v).max()) for v in ref.values())
    first = next(iter(ref))
    diff = got[first].astype(np.float64) - ref[first]
    rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref[first])), 1e-30))
    # no top-1 agreement on random inputs: on two random samples it is 0, 50 or 100% and says nothing
    return Agreement(label, comparison.max_abs_diff, top, scale=comparison.max_abs_reference, rel_l2=rel_l2)


def _agreement_data(source_out: np.ndarray, artifact_out: np.ndarray, data: Dataset, label: str) -> Agreement:
    n = len(artifact_out)
    src = source_out[:n]
    agreement = Agreement(label, float(np.abs(src.astype(np.float64) - artifact_out).max()),
                          float(np.abs(src).max()), samples=n)
    if src.ndim == 2:
        top1 = float((src.argmax(1) == artifact_out.argmax(1)).mean())
        acc = src_acc = None
        if data.labels is not None:
            acc = float((artifact_out.argmax(1) == data.labels[:n]).mean())
            src_acc = float((src.argmax(1) == data.labels[:n]).mean())
        agreement = Agreement(label, agreement.max_abs_diff, agreement.max_abs_output, top1, acc, src_acc, n)
    elif src.ndim == 3:
        labels = data.labels[:n] if data.labels is not None else None
        agreement = dataclasses.replace(agreement, metrics=sequence_metrics(src, artifact_out, labels),
                                        source_metrics=sequence_metrics(src, src, labels))
    return agreement


def emit(source: Path | str | onnx.ModelProto, out_dir: Path | str, options: EmitOptions) -> EmitResult:
    """Write the artifacts of ``options.target`` into ``out_dir`` with a manifest (per-stage times included).
    ``source``: a model file, or a model in memory (written to a private temporary file first, which the
    manifest then names as the source)."""
    if isinstance(source, onnx.ModelProto):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="onnxprune-emit-") as tmp:
            path = Path(tmp) / "model.onnx"
            save_model(source, path, full_check=True)
            return emit(path, out_dir, options)
    with timing() as stages:
        return _emit(Path(source), Path(out_dir), options, stages)


def _emit(source_path: Path, out_dir: Path, options: EmitOptions, stages: list[dict[str, object]]) -> EmitResult:
    _check_options(options)
    check_paths(inputs=[source_path, options.data, options.eval_data], folders=[("-o", out_dir)])
    check_output_dir(out_dir, options.force)
    with staged_output_dir(out_dir, options.force, "emit") as tmp:
        notes: list[str] = []
        with stage("loading the model"):
            source = load(source_path, notes)
        notes[:] = [f"repaired on load: {n}" for n in notes]
        shapes = resolve_input_shapes(source, InputSpec(options.input_shapes, batch=1))
        if options.target is Target.MOBILE:
            fixed_source = fix_shapes(source, options.input_shapes)  # raises when shapes are missing
            shapes = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
                      for vi in fixed_source.graph.input if vi.name in shapes}
        with stage("loading data"):
            calibration = load_data(options.data, source, options.preprocess, options.calibration_samples) \
                if options.data else None
            eval_path = options.eval_data or options.data
            data = load_data(eval_path, source, options.preprocess, DATA_SAMPLES) if eval_path else None
        if options.int8 is Int8.STATIC and calibration is None:
            print("onnxprune: warning: calibrating int8 on random inputs; accuracy will be poor", file=sys.stderr)
            notes.append("int8 calibrated on random inputs (`calibration` random)")
            calibration = _random_dataset(source, shapes, 32)
        elif calibration is not None:
            calibration = calibration.limit(options.calibration_samples)

        with stage("folding"):
            fold_result = fold(source)
            folded = fold_result.model
        passes = [r.name for r in fold_result.pipeline.records]   # the passes that ran
        costs = count_costs(folded, shapes)
        manifest = Manifest(
            target=options.target.value,
            source={"path": str(source_path), "sha256": sha256(Path(source_path)), "bytes": Path(source_path).stat().st_size},
            passes=passes, onnxruntime=ort.__version__, onnxprune=__version__,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"] if options.target is Target.CUDA
            else ["CPUExecutionProvider"],
            provider_options={"CUDAExecutionProvider": CUDA_PROVIDER_OPTIONS} if options.target is Target.CUDA else {},
            session_options={"graph_optimization_level": "ORT_ENABLE_ALL"},
            macs=costs.macs, params=costs.params, input_shapes={k: list(v) for k, v in shapes.items()}, notes=notes)

        work = tmp / "_work"
        work.mkdir()
        float_path = work / "float.onnx"
        save_model(folded, float_path)
        artifacts: list[tuple[str, str, str]] = []  # (file name, role, precision)
        if options.target is Target.CPU:
            level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if options.for_this_machine \
                else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            with stage("ONNX Runtime offline optimization"):
                _ort_optimize(float_path, tmp / "model.onnx", level)
            scope = "ALL, including the NCHWc layout of this machine's CPU: do not ship to other CPUs" \
                if options.for_this_machine else "EXTENDED: portable to any x86/ARM CPU"
            artifacts.append(("model.onnx", f"float32, optimized offline by ONNX Runtime at level {scope}",
                              "float32"))
            notes.append(f"optimization level {scope}")
            if options.int8 is not Int8.NONE:
                _int8(float_path, tmp / "model.int8.onnx", options, calibration, data, work, notes, manifest)
                artifacts.append(("model.int8.onnx", int8_role(tmp / "model.int8.onnx", options.int8), "int8"))
        elif options.target is Target.CUDA:
            with stage("float16 conversion"):
                save_model(to_float16(folded), tmp / "model.fp16.onnx", full_check=True)
            artifacts.append(("model.fp16.onnx", "float16 weights and math, float32 inputs/outputs; kept float32: "
                              + ", ".join(FP16_BLOCK_LIST), "float16"))
            notes.append("checked numerically on ONNX Runtime CPU (float16 kernels or casts)")
        else:
            fixed = fix_shapes(folded, options.input_shapes)
            save_model(fixed, tmp / "model.onnx", full_check=True)
            artifacts.append(("model.onnx", "float32 with fixed input shapes", "float32"))
            convert_from = tmp / "model.onnx"
            if options.int8 is not Int8.NONE:
                _int8(tmp / "model.onnx", tmp / "model.int8.onnx", options, calibration, data, work, notes, manifest)
                artifacts.append(("model.int8.onnx", int8_role(tmp / "model.int8.onnx", options.int8), "int8"))
                convert_from = tmp / "model.int8.onnx"
            with stage("ORT format conversion"):
                ort_path, config = to_ort_format(convert_from, tmp, options.style)
            artifacts.append((ort_path.name, f"ORT format ({options.style.value} optimization style)",
                              "int8" if options.int8 is not Int8.NONE else "float32"))
            artifacts.append((config.name, "required operators for a reduced ORT build (--include_ops_by_config)",
                              "config"))
            with stage("mobile usability report"):
                text, summary = usability_report(tmp / "model.onnx")
            (tmp / "mobile_usability.txt").write_text(text)
            artifacts.append(("mobile_usability.txt", "ORT mobile usability report (NNAPI / CoreML)", "report"))
            manifest.mobile_usability = summary
            if options.style.value == "runtime":
                manifest.session_options["session.enable_saved_runtime_optimizations"] = "1"
        with stage("checking every artifact in ONNX Runtime", total=len(artifacts), unit="files"):
            _check_artifacts(tmp, source, artifacts, shapes, data, manifest, options)
        shutil.rmtree(work)
        manifest.finalize(tmp)
        manifest.stages = list(stages)
        manifest.write(tmp)
    return EmitResult(out_dir, manifest)


def _int8(src: Path, dst: Path, options: EmitOptions, calibration: Dataset | None, data: Dataset | None,
          work: Path, notes: list[str], manifest: Manifest) -> None:
    """int8 of ``src`` into ``dst``: dynamic as ORT does it; static with the default float nodes, and with
    ``--max-drop`` the accuracy-driven search of :mod:`onnxprune.emission.int8_search`."""
    if options.int8 is Int8.DYNAMIC:
        with stage("int8 dynamic quantization"):
            quantize(src, dst, options.int8, calibration, work, notes)
        return
    with stage("int8 static: preparing"):
        pre = prepare(src, work, notes)
    float_model = onnx.load(pre)
    defaults = default_float_nodes(float_model)
    method = options.calibration_method.value
    tries = iter(range(1, 1 << 30))

    def quantize_excluding(names: list[str], how: str | None = None) -> Path:
        path = work / f"int8_try{next(tries)}.onnx"
        quantize_prepared(pre, path, options.int8, calibration, notes, names, how or method,
                          options.symmetric_activations, float_inputs=options.max_drop is not None)
        return path

    metric = None
    if data is not None:
        metric = parse_metric(options.metric) or default_metric(data, outputs(float_model, data.limit(2)))
    calibrations: dict[str, float] = {}
    if options.calibration_method is CalibrationMethod.AUTO:
        assert data is not None and metric is not None
        reference = outputs(float_model, data)
        with stage("int8: choosing the calibration method", total=3, unit="methods") as s:
            for how in ("minmax", "entropy", "percentile"):
                got = outputs(onnx.load(quantize_excluding([f.name for f in defaults], how)), data)
                calibrations[how] = metrics(reference, got, data.labels)[metric.value]
                s.advance()
        lower = metric.value in {m.value for m in LOWER_IS_BETTER}
        method = (min if lower else max)(calibrations, key=calibrations.get)
        notes.append(f"int8 calibration method {method} ({metric.value} on {len(data)} samples: "
                     + ", ".join(f"{k} {v:.4g}" for k, v in calibrations.items()) + ")")
    if options.max_drop is None:
        with stage("int8 static quantization"):
            quantize_prepared(pre, dst, options.int8, calibration, notes, [f.name for f in defaults], method,
                              options.symmetric_activations)
        manifest.int8 = {"calibration": method, "calibration_tried": calibrations or None,
                         "kept_float": [asdict(f) for f in defaults]}
        return
    assert data is not None and calibration is not None and metric is not None
    found, chosen = search(quantize_excluding, float_model, data, calibration, metric, options.max_drop,
                           str(options.eval_data or options.data))
    shutil.copyfile(chosen, dst)
    manifest.int8 = {"calibration": method, "calibration_tried": calibrations or None, "metric": found.metric, "max_drop_points": found.max_drop, "data": found.data,
                     "samples": found.samples, "float": found.float_value, "default_float_nodes_only": found.first_value,
                     "final": found.final_value, "drop_points": round(found.drop, 4),
                     "within_budget": found.within_budget, "tries": found.tries,
                     "kept_float": [asdict(f) for f in found.kept_float]}
    verdict = "within" if found.within_budget else "NOT within"
    notes.append(f"int8 `max_drop` {found.max_drop:g}: {found.metric} {found.float_value:.4g} float -> "
                 f"{found.final_value:.4g} int8 ({found.drop:.2f} points, {verdict} budget) on {found.samples} "
                 f"samples of {found.data}; {len(found.kept_float)} node(s) kept float ({found.tries} tries)")


def _ort_optimize(src: Path, dst: Path, level: ort.GraphOptimizationLevel) -> None:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def _check_artifacts(folder: Path, source: onnx.ModelProto, artifacts: list[tuple[str, str, str]],
                     shapes: dict[str, tuple[int, ...]], data: Dataset | None, manifest: Manifest,
                     options: EmitOptions) -> None:
    fixed_batch = next(iter(shapes.values()))[0] if options.target is Target.MOBILE else None
    feed_shapes = shapes if fixed_batch else with_batch(source, shapes, 2)
    reference = Reference.on(source, random_inputs(source, feed_shapes, seed=0))
    source_session = make_session(source)
    source_data = _outputs(source_session, data, fixed_batch) if data is not None else None
    for name, role, precision in artifacts:
        entry = FileEntry(name, role)
        manifest.files.append(entry)
        if precision in ("config", "report"):
            continue
        session = _session(folder / name)
        label = f"seeded random, shape {'x'.join(map(str, next(iter(feed_shapes.values()))))}"
        agreement = _agreement_random(reference, session, label)
        entry.agreement.append(agreement)
        tol = TOLERANCE.get(precision)
        if not np.isfinite(agreement.max_abs_diff) or (tol is not None and agreement.max_abs_diff >
                                                         tol * max(agreement.scale, 1e-30)):
            raise VerificationError(f"{name}: outputs differ from the source model: max abs diff "
                                    f"{agreement.max_abs_diff:.3g} > {tol} x {agreement.scale:.3g} (max |output| "
                                    f"{agreement.max_abs_output:.3g}; see the tolerance rule in the README)")
        if data is not None and source_data is not None:
            entry.agreement.append(_agreement_data(source_data, _outputs(session, data, fixed_batch), data,
                                                   str(options.eval_data or options.data)))
        if options.target is Target.CUDA:
            _check_on_cuda(folder / name, reference, entry, manifest)


def _check_on_cuda(path: Path, reference: Reference, entry: FileEntry, manifest: Manifest) -> None:
    """Run the artifact on the CUDA execution provider when this machine has one (onnxruntime-gpu + a GPU)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        manifest.notes.append("CUDAExecutionProvider not available on this machine: not run on a GPU")
        return
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=[("CUDAExecutionProvider", CUDA_PROVIDER_OPTIONS),
                                                               "CPUExecutionProvider"])
    agreement = _agreement_random(reference, session, "seeded random, CUDAExecutionProvider")
    entry.agreement.append(agreement)
    if agreement.max_abs_diff > TOLERANCE["float16"] * max(agreement.scale, 1e-30):
        raise VerificationError(f"{path.name} on CUDA differs from the source: max abs diff "
                                f"{agreement.max_abs_diff:.3g}")
