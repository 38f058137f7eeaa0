"""The ``emit`` step: the files ONNX Runtime should load for a target, checked against the source, and a
manifest, in a new folder (see :mod:`onnxprune.emission`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from onnxprune.emission import EmitOptions, Int8, Style, Target, emit
from onnxprune.emission.options import CalibrationMethod
from onnxprune.metrics import parse_metric
from onnxprune.steps.base import DataOptions, Step, StepContext, StepResult, option
from onnxprune.steps.inputs import image_preprocess
from onnxprune.verify import parse_input_shapes


@dataclass(frozen=True)
class EmitStep(DataOptions, Step):
    """Emit for ``target`` into ``ctx.output``; ``int8`` static (calibrated on ``data``) or dynamic, with
    ``max_drop`` / ``metric`` / ``calibration_method`` / ``symmetric_activations`` for static; ``force``
    replaces a folder onnxprune wrote."""

    kind: ClassVar[str] = "emit"
    target: str = option("cpu", choices=tuple(t.value for t in Target))
    force: bool = False
    int8: str | None = option(None, choices=("static", "dynamic"), const="static")
    limit: int | None = 256
    eval_data: Path | None = None
    max_drop: float | None = None
    metric: str | None = None
    calibration_method: str = option("minmax", choices=tuple(c.value for c in CalibrationMethod))
    symmetric_activations: bool = False
    calibration: str = option("data", choices=("data", "random"))
    for_this_machine: bool = False
    style: str = option("fixed", choices=tuple(s.value for s in Style))
    input_shape: tuple[str, ...] = ()

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        parse_metric(self.metric)              # a bad metric fails now, before any work
        options = EmitOptions(target=Target(self.target), int8=Int8(self.int8) if self.int8 else Int8.NONE,
                              data=self.data, eval_data=self.eval_data,
                              random_calibration=self.calibration == "random",
                              for_this_machine=self.for_this_machine,
                              input_shapes=parse_input_shapes(list(self.input_shape)), style=Style(self.style),
                              force=self.force, calibration_samples=self.limit or 256,
                              preprocess=image_preprocess(self), max_drop=self.max_drop, metric=self.metric,
                              calibration_method=CalibrationMethod(self.calibration_method),
                              symmetric_activations=self.symmetric_activations)
        result = emit(Path(ctx.model), ctx.output, options)
        report = json.loads((result.folder / "manifest.json").read_text())
        return StepResult(self.kind, None, report, (result.folder,), details=result)
