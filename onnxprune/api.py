"""The Python API: load, fold, summarize, save. The CLI is a thin layer over these functions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from onnxprune.io import read_model, save_model
from onnxprune.model_summary import ModelSummary, summarize
from onnxprune.normalize import normalize
from onnxprune.pass_infra import Checks, Finding, PassManager, PipelineResult
from onnxprune.passes import Simplify
from onnxprune.pipelines import fold_passes
from onnxprune.verify import InputSpec


def load(path: str | os.PathLike[str], notes: list[str] | None = None, *,
         ort_artifact: bool = False) -> onnx.ModelProto:
    """Read, check and normalize an ONNX file (interface repaired, Constant weights lifted, constant
    subexpressions folded, topologically sorted, shapes inferred); repairs are appended to ``notes``.
    ``ort_artifact``: also read a model ONNX Runtime optimized (see :func:`onnxprune.io.read_model`)."""
    return normalize(read_model(path, notes, ort_artifact=ort_artifact), copy=False)


def save(model: onnx.ModelProto, path: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None,
         external_data: bool | None = None) -> None:
    """Write ``model`` atomically (never over ``source``) once the full ONNX checker has passed on it."""
    save_model(model, path, external_data=external_data, inputs=(source,) if source else (), full_check=True)


def finetune(student: onnx.ModelProto, data: object, **kwargs: object) -> object:
    """Distillation fine-tuning of ``student`` in its own graph: :func:`onnxprune.training.finetune` (see there
    for the arguments; returns a ``FinetuneResult``). Imports PyTorch on first use."""
    try:
        from onnxprune.training import finetune as run
    except ImportError as e:
        raise ImportError("onnxprune.finetune needs PyTorch: pip install 'onnxprune[finetune]'") from e
    return run(student, data, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FoldResult:
    model: onnx.ModelProto
    pipeline: PipelineResult

    def _findings(self, simplify: bool) -> tuple[Finding, ...]:
        return tuple(f for r in self.pipeline.records if (r.name == Simplify.name) == simplify for f in r.findings)

    @property
    def folded(self) -> tuple[Finding, ...]:
        """Ops folded into a layer (BatchNormalization, per-channel Mul/Add/Sub/Div)."""
        return tuple(f for f in self._findings(False) if f.applied)

    @property
    def skipped(self) -> tuple[Finding, ...]:
        """Fold candidates left as they were, with the reason."""
        return tuple(f for f in self._findings(False) if not f.applied)

    @property
    def simplified(self) -> tuple[Finding, ...]:
        """What the exact simplifications changed (a merged or removed node, a constant Reshape target...)."""
        return tuple(f for f in self._findings(True) if f.applied)


def fold(model: onnx.ModelProto, checks: Checks = Checks(), *, simplify: bool = True) -> FoldResult:
    """Fold BatchNormalization and per-channel constant affine ops into the preceding layers, after the exact
    simplifications of :class:`onnxprune.passes.Simplify` (``simplify=False``: folding only)."""
    result = PassManager(fold_passes(simplify), checks).run(model)
    return FoldResult(result.model, result)


def inspect(model: onnx.ModelProto, spec: InputSpec = InputSpec()) -> ModelSummary:
    return summarize(model, spec)
