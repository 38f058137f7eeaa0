"""Typed steps: one object per onnxprune operation, shared by the CLI, recipes, the zoo and the API (see
:mod:`onnxprune.steps.base`)."""

from __future__ import annotations

from onnxprune.steps.base import Step, StepContext, StepOptionError, StepResult
from onnxprune.steps.bench import BenchStep
from onnxprune.steps.compress import CompressStep
from onnxprune.steps.emit import EmitStep
from onnxprune.steps.finetune import FinetuneStep
from onnxprune.steps.fold import FoldStep
from onnxprune.steps.prune import PruneStep
from onnxprune.steps.sensitivity import SensitivityStep

#: Every step by name, in the order a pipeline usually runs them.
STEPS: dict[str, type[Step]] = {cls.kind: cls for cls in (FoldStep, PruneStep, SensitivityStep, FinetuneStep,
                                                          CompressStep, EmitStep, BenchStep)}

__all__ = ["STEPS", "BenchStep", "CompressStep", "EmitStep", "FinetuneStep", "FoldStep", "PruneStep",
           "SensitivityStep", "Step", "StepContext", "StepOptionError", "StepResult"]
