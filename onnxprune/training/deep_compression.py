"""Deep Compression's retraining (Han et al., ICLR 2016, sec. 2-3) for ``compress --finetune-epochs``: after
connection pruning, distillation with every pruned connection held at exactly zero; after weight sharing,
fine-tuning of the codebooks with each weight's centroid index fixed (the gradients of the weights that share a
centroid are summed into it). Implements :class:`onnxprune.compression.pipeline.Retrainer`."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.data import Dataset
from onnxprune.training.train import FinetuneOptions, finetune


@dataclass(frozen=True)
class DistillRetrainer:
    """Each phase trains ``options`` (epochs or steps) on ``train``; the teacher is ``teacher`` when given, else
    the model before compression."""

    train: Dataset
    options: FinetuneOptions
    teacher: onnx.ModelProto | None = None
    eval_data: Dataset | None = None

    def masked(self, model: onnx.ModelProto, teacher: onnx.ModelProto, share: float = 1.0) -> onnx.ModelProto:
        options = replace(self.options, masks=True,
                          epochs=self.options.epochs * share,
                          steps=None if self.options.steps is None else max(1, round(self.options.steps * share)))
        return finetune(model, self.train, teacher=self.teacher or teacher, eval_data=self.eval_data,
                        options=options).model

    def centroids(self, model: onnx.ModelProto, teacher: onnx.ModelProto,
                  ties: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        result = finetune(model, self.train, teacher=self.teacher or teacher, eval_data=self.eval_data,
                          options=replace(self.options, masks=True,
                                          ties=tuple((name, cb, index) for name, (cb, index) in ties.items())))
        return result.model, result.codebooks
