"""Typed steps: one object per onnxprune operation, shared by the CLI, recipes, the zoo and the API (see
:mod:`onnxprune.steps.base`)."""

from __future__ import annotations

import dataclasses

from onnxprune.errors import OptionStyle, option_text
from onnxprune.steps.base import Step, StepContext, StepOptionError, StepResult
from onnxprune.steps.bench import BenchStep
from onnxprune.steps.compress import CompressStep
from onnxprune.steps.emit import EmitStep
from onnxprune.steps.finetune import FinetuneStep
from onnxprune.steps.fold import FoldStep
from onnxprune.steps.profile import ProfileStep
from onnxprune.steps.prune import PruneStep
from onnxprune.steps.sensitivity import SensitivityStep

#: Every step by name, in the order a pipeline usually runs them.
STEPS: dict[str, type[Step]] = {cls.kind: cls for cls in (FoldStep, ProfileStep, PruneStep, SensitivityStep,
                                                          FinetuneStep,
                                                          CompressStep, EmitStep, BenchStep)}

#: Step fields whose flag / recipe key is not the field name with dashes (``global_ranking`` -> ``global``).
RENAMED_OPTIONS: dict[str, str] = {f.name: f.metadata["flag"] for cls in STEPS.values()
                                   for f in dataclasses.fields(cls) if f.metadata.get("flag")}  # type: ignore[arg-type]


def options_as(message: str, style: OptionStyle) -> str:
    """A library message with the options it names (```max_drop```) written as flags or recipe keys."""
    return option_text(message, style, RENAMED_OPTIONS)


__all__ = ["RENAMED_OPTIONS", "STEPS", "BenchStep", "CompressStep", "EmitStep", "FinetuneStep", "FoldStep", "ProfileStep", "PruneStep",
           "SensitivityStep", "Step", "StepContext", "StepOptionError", "StepResult", "options_as"]
