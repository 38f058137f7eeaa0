"""The ``finetune`` step: the student's weights trained in its own ONNX graph, distilling a teacher (see
:mod:`onnxprune.training.train`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from onnxprune.errors import UsageError
from onnxprune.io import ensure_output_path, write_text_atomic
from onnxprune.metrics import parse_metric
from onnxprune.steps.base import DataOptions, Step, StepContext, StepResult, option
from onnxprune.steps.inputs import Merged, data_from, guard_paths, load_model


@dataclass(frozen=True)
class FinetuneStep(DataOptions, Step):
    """Distil ``teacher`` (default: the model the run started from, ``ctx.original``; none on the command line)
    into the model on ``data``; the options are :class:`onnxprune.training.FinetuneOptions`'s, plus
    ``freeze_sensitive`` (a sensitivity folder and ``tolerance``) and ``save_best`` (needs ``eval_data``)."""

    kind: ClassVar[str] = "finetune"
    teacher: Path | None = None
    eval_data: Path | None = None
    metric: str | None = None
    epochs: float = 5.0
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 32
    optimizer: str = option("adam", choices=("adam", "sgd"))
    schedule: str = option("cosine", choices=("cosine", "constant"))
    weight_decay: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.5
    match: tuple[str, ...] = ()
    patience: int | None = None
    eval_every: int | None = None
    seed: int = 0
    threads: int | None = None
    freeze: tuple[str, ...] = ()
    freeze_sensitive: Path | None = None
    tolerance: float = 0.01
    save_best: bool = False

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.output is not None
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError("onnxprune finetune needs PyTorch: pip install 'onnxprune[finetune]'") from None
        from onnxprune.api import save
        from onnxprune.signals import signals_deferred
        with signals_deferred():   # torch's import must not be cut by a signal (see onnxprune.signals)
            from onnxprune.training.train import (
                FinetuneOptions,
                Optimizer,
                Schedule,
                finetune,
                sensitive_layers,
            )
        teacher_path = self.teacher or ctx.original
        guard_paths(Merged(ctx, self), inputs=("model", "teacher", "data", "eval_data", "freeze_sensitive"),
                    files=("output", "report"))
        ensure_output_path(ctx.output, ctx.model)
        if self.data is None:
            raise UsageError("finetune trains on data: give `data`")
        if self.save_best and self.eval_data is None:
            raise UsageError("`save_best` needs `eval_data` (the best is chosen on it)")
        if self.batch_size < 1 or (self.steps is not None and self.steps < 1) or self.epochs <= 0:
            raise UsageError("`batch_size`, `steps` and `epochs` must be positive")
        student = load_model(ctx.model, normalized=False)     # trained as it is: only weight values change
        teacher = load_model(teacher_path) if teacher_path else None
        data = data_from(self, student)
        assert data is not None
        eval_data = data_from(self, student, "eval_data")
        freeze = self.freeze
        if self.freeze_sensitive:
            freeze += sensitive_layers(self.freeze_sensitive, self.tolerance)
        options = FinetuneOptions(epochs=self.epochs, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                                  optimizer=Optimizer(self.optimizer), schedule=Schedule(self.schedule),
                                  weight_decay=self.weight_decay, temperature=self.temperature, alpha=self.alpha,
                                  match=self.match, freeze=freeze, eval_every=self.eval_every,
                                  patience=self.patience, seed=self.seed, threads=self.threads,
                                  metric=parse_metric(self.metric))
        output = ctx.output

        def save_best(model: onnx.ModelProto, step: int) -> None:
            save(model, output, source=ctx.model)

        result = finetune(student, data, teacher=teacher, eval_data=eval_data, options=options,
                          on_improved=save_best if self.save_best else None)
        save(result.model, ctx.output, source=ctx.model)
        report = {"input": str(ctx.model), "output": str(ctx.output),
                  "teacher": str(teacher_path) if teacher_path else None, "train_samples": len(data),
                  "eval_samples": len(eval_data) if eval_data is not None else None, **result.to_json()}
        if ctx.report:
            write_text_atomic(ctx.report, json.dumps(report, indent=1) + "\n", ctx.model)
        files = (ctx.output, *([ctx.report] if ctx.report else []))
        return StepResult(self.kind, ctx.output, report, files, details=result)
