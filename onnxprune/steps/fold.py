"""The ``fold`` step: BatchNorm (and per-channel constant affine ops) folded into the preceding layers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from onnxprune.io import ensure_output_path
from onnxprune.pass_infra import CheckLevel, Checks
from onnxprune.steps.base import Step, StepContext, StepResult, option
from onnxprune.steps.inputs import Merged, guard_paths, input_spec, load_model


@dataclass(frozen=True)
class FoldStep(Step):
    """Fold; ``verify`` checks every pass numerically against ONNX Runtime (``tolerance``); ``no_simplify``
    skips the exact simplifications; ``external_data``: auto, yes or no."""

    kind: ClassVar[str] = "fold"
    verify: bool = False
    tolerance: float | None = None
    no_simplify: bool = False
    dump_dir: Path | None = None
    external_data: str = option("auto", choices=("auto", "yes", "no"))
    input_shape: tuple[str, ...] = ()
    batch: int = 1

    def run(self, ctx: StepContext) -> StepResult:
        from onnxprune.api import fold, save

        assert ctx.output is not None
        guard_paths(Merged(ctx, self), inputs=("model",), files=("output",), folders=("dump_dir",))
        ensure_output_path(ctx.output, ctx.model)
        spec = input_spec(self)
        model = load_model(ctx.model)
        checks = Checks(CheckLevel.NUMERIC if self.verify else CheckLevel.NONE, rel_tol=self.tolerance,
                        inputs=spec, dump_dir=self.dump_dir)
        result = fold(model, checks, simplify=not self.no_simplify)
        save(result.model, ctx.output, source=ctx.model,
             external_data={"auto": None, "yes": True, "no": False}[self.external_data])
        comparison = result.pipeline.comparison
        report = {
            "input": str(ctx.model), "output": str(ctx.output),
            "batchnorm_before": sum(1 for n in model.graph.node if n.op_type == "BatchNormalization"),
            "batchnorm_after": sum(1 for n in result.model.graph.node if n.op_type == "BatchNormalization"),
            "folded": dict(Counter(f.op for f in result.folded)),
            "not_folded": [{"node": f.node, "op": f.op, "reason": f.reason} for f in result.skipped],
            "simplified": dict(Counter(f.op for f in result.simplified)),
            "nodes_before": len(model.graph.node), "nodes_after": len(result.model.graph.node),
            "verified": self.verify,
            "max_abs_diff": comparison.max_abs_diff if comparison else None,
            "max_abs_output": comparison.max_abs_reference if comparison else None,
            "seconds": round(sum(r.seconds for r in result.pipeline.records), 4),
        }
        files = (ctx.output, *([self.dump_dir] if self.dump_dir else []))
        return StepResult(self.kind, ctx.output, report, files, details=result)
