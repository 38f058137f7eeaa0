"""Filter pruning end to end: analyse, score, plan, rewrite, and optionally verify against the masked model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.channels import ChannelAnalysis, analyze
from onnxprune.data import Dataset
from onnxprune.errors import UsageError, VerificationError
from onnxprune.flops import count_costs
from onnxprune.io import check_model
from onnxprune.importance import score_groups
from onnxprune.pass_infra import Checks, PassManager, default_tolerance
from onnxprune.passes import Cleanup, MaskRemovedChannels, PruneChannels
from onnxprune.plan import CostModel, PlanOptions, PruningPlan, make_plan
from onnxprune.recover import Recover, recover
from onnxprune.verify import Comparison, InputSpec, Reference, make_session, resolve_input_shapes, run


@dataclass(frozen=True)
class PruneReport:
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    groups_pruned: int
    groups_frozen: int
    groups_total: int
    input_shapes: dict[str, list[int]]
    max_abs_diff: float | None = None
    max_abs_output: float | None = None
    recovery: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PruneResult:
    model: onnx.ModelProto
    plan: PruningPlan
    report: PruneReport
    analysis: ChannelAnalysis  # of the input model; its graph object was rewritten into ``model``


def plan_pruning(model: onnx.ModelProto, options: PlanOptions, spec: InputSpec = InputSpec()
                 ) -> tuple[PruningPlan, ChannelAnalysis]:
    analysis = analyze(model)
    scores = score_groups(analysis, options.criterion, options.seed)
    cost = None
    if options.target_flops is not None:
        cost = CostModel(analysis, count_costs(model, resolve_input_shapes(model, spec)))
    return make_plan(analysis, scores, options, cost), analysis


def masked_model(model: onnx.ModelProto, plan: PruningPlan) -> onnx.ModelProto:
    """The original model with every weight that reads a removed channel set to zero."""
    return PassManager([MaskRemovedChannels(plan)]).run(model).model


def verify_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: PruningPlan,
                  spec: InputSpec = InputSpec(batch=2), rel_tol: float | None = None, seed: int = 0) -> Comparison:
    """Compare the pruned model with the masked original on seeded inputs (ORT optimizations off)."""
    reference = Reference.of(masked_model(original, plan), spec, seed)
    comparison = reference.compare(pruned)
    tol = rel_tol if rel_tol is not None else default_tolerance(reference)
    if not comparison.within(tol):
        raise VerificationError(f"pruned model differs from the masked original: max abs diff "
                                f"{comparison.max_abs_diff:.3g} on {comparison.worst_output!r} > {tol:g} x "
                                f"max|output| ({comparison.max_abs_reference:.3g})")
    return comparison


def consumer_masks(analysis: ChannelAnalysis, plan: PruningPlan) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Keep-masks of each consumer layer's input channel positions and output channels under ``plan``."""
    removed = plan.removed_roots(analysis)

    def keep(name: str) -> np.ndarray | None:
        layout = analysis.layouts.get(name)
        return None if layout is None else ~removed[analysis.roots[layout.elems]]

    return {node.name: (keep(tensor), keep(node.outputs[0].name))
            for node, tensor in analysis.consumers if tensor in analysis.layouts}


def _quality(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    q = {"rel_l2": float(np.linalg.norm(outputs - reference) / max(np.linalg.norm(reference), 1e-30))}
    if reference.ndim == 2:
        q["top1_agreement"] = float((outputs.argmax(1) == reference.argmax(1)).mean())
        if labels is not None:
            q["accuracy"] = float((outputs.argmax(1) == labels).mean())
    return q


def _first_output(model: onnx.ModelProto, data: Dataset) -> np.ndarray:
    session = make_session(model)
    name = session.get_outputs()[0].name
    return np.concatenate([run(session, batch)[name] for batch in data.batches(64)])


def prune(model: onnx.ModelProto, options: PlanOptions = PlanOptions(), *, plan: PruningPlan | None = None,
          spec: InputSpec = InputSpec(), checks: Checks = Checks(), verify: bool = False,
          recover_with: Recover = Recover.NONE, data: Dataset | None = None) -> PruneResult:
    """Prune ``model`` (normalized) by ``plan`` or by a plan made from ``options``; optionally recover the
    accuracy on calibration ``data`` (``bias`` or ``lsq``, see ``onnxprune.recover``)."""
    if recover_with is not Recover.NONE and data is None:
        raise UsageError(f"--recover {recover_with.value} needs calibration data (--data FILE.npz)")
    if plan is None:
        plan, analysis = plan_pruning(model, options, spec)
    else:
        analysis = analyze(model)
        plan.removed_roots(analysis)  # validate before rewriting
    masks = consumer_masks(analysis, plan) if recover_with is not Recover.NONE else {}
    # the analysis owns a graph of ``model``: rewrite that one instead of importing and analysing again
    pruned = PassManager([PruneChannels(plan, analysis), Cleanup()], checks).run(model, analysis.graph).model
    shapes = resolve_input_shapes(model, spec)
    before, after = count_costs(model, shapes), count_costs(pruned, shapes)
    comparison = verify_pruned(model, pruned, plan, InputSpec(spec.shapes, batch=max(spec.batch, 2)),
                               checks.rel_tol) if verify else None
    recovery = None
    if recover_with is not Recover.NONE:
        assert data is not None
        reference = _first_output(model, data)
        quality_before = _quality(reference, _first_output(pruned, data), data.labels)
        pruned, fixes = recover(model, pruned, masks, data, recover_with)
        check_model(pruned, "recovered model", full_check=True)
        quality_after = _quality(reference, _first_output(pruned, data), data.labels)
        recovery = {"method": recover_with.value, "samples": len(data), "before": quality_before,
                    "after": quality_after,
                    "layers": [f.__dict__ for f in fixes]}
    report = PruneReport(
        flops_before=before.macs, flops_after=after.macs, params_before=before.params, params_after=after.params,
        groups_pruned=sum(1 for g in plan.groups if g.removed), groups_frozen=len(analysis.frozen_groups),
        groups_total=len(analysis.groups), input_shapes={k: list(v) for k, v in shapes.items()},
        max_abs_diff=comparison.max_abs_diff if comparison else None,
        max_abs_output=comparison.max_abs_reference if comparison else None, recovery=recovery)
    return PruneResult(pruned, plan, report, analysis)
