"""Prune–retrain cycles (the notes' strategies 1 + 4): ``rounds`` times, prune a share of the target from the
current model (recovering by least squares when asked), then fine-tune it by distillation from the original.

Rule: round ``i`` of ``K`` leaves ``1 - (1 - F) * i / K`` of the original MACs for ``--target-flops F``, and keeps
``(1 - r) ** (i / K)`` of each group's channels for ``--ratio r``; each round fine-tunes ``epochs / K`` epochs, so
the total training budget equals one-shot pruning followed by ``epochs`` epochs. Unlike the training-free
``iterative`` schedule (which rewrites the original each round), each round starts from the fine-tuned model
of the round before: its weights carry over. Limits: ``--ratio-for`` ratios compound the same way; explicit plans
(``--plan``, ``--sensitivity``) prune once, so they are refused here.

Layer-wise (:func:`layerwise_finetune_cycles`): the plan is made once on the original (so the channel counts
equal one-shot's), its groups are ordered least sensitive first on the calibration data (the metric loss when
that group alone is pruned, as ``--schedule layerwise``), and split into ``rounds`` consecutive chunks; round i
prunes chunk i's groups to their planned counts, choosing the channels by the criterion on the current
(fine-tuned) weights, then fine-tunes ``epochs / K``. A group the current model no longer has as one prunable
unit is left whole and named in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.channels import analyze
from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.flops import count_costs
from onnxprune.importance import Criterion, score_groups
from onnxprune.metrics import Metric
from onnxprune.plan import GroupPlan, PlanOptions, PruningPlan, select_units
from onnxprune.progress import stage
from onnxprune.pruning import PruneResult, masked_model, plan_pruning, prune
from onnxprune.recover import Recover
from onnxprune.schedule import removal_counts, sensitivity_order
from onnxprune.training.train import FinetuneOptions, FinetuneResult, finetune
from onnxprune.verify import InputSpec, resolve_input_shapes


@dataclass(frozen=True)
class CycleRound:
    round: int
    macs_kept: float          # of the original's MACs, after this round
    pruned: PruneResult
    tuned: FinetuneResult


@dataclass(frozen=True)
class CycleResult:
    model: onnx.ModelProto
    rounds: tuple[CycleRound, ...]
    order: tuple[tuple[str, float], ...] = ()     # layer-wise: (group, metric loss alone), least sensitive first
    skipped: tuple[str, ...] = ()                 # layer-wise: planned groups left whole (see the module doc)

    def to_json(self) -> list[dict[str, object]]:
        return [{"round": r.round, "macs_kept": round(r.macs_kept, 4), "finetune_steps": r.tuned.steps,
                 "finetune_seconds": round(r.tuned.seconds, 2), "before": r.tuned.before, "after": r.tuned.after}
                for r in self.rounds]


def _tuned(i: int, pruned: PruneResult, teacher: onnx.ModelProto, train: Dataset, eval_data: Dataset | None,
           options: FinetuneOptions, spec: InputSpec, macs_original: float) -> CycleRound:
    """Round ``i``: fine-tune the pruned model by distilling ``teacher``; its MACs against the original's."""
    tuned = finetune(pruned.model, train, teacher=teacher, eval_data=eval_data, options=options)
    macs = count_costs(tuned.model, resolve_input_shapes(tuned.model, spec)).macs
    return CycleRound(i, macs / max(macs_original, 1), pruned, tuned)


def round_options(options: PlanOptions, i: int, rounds: int, macs_original: float, macs_current: float) -> PlanOptions:
    """The plan options of round ``i`` (1-based), relative to the current model."""
    if options.target_flops is not None:
        want = 1 - (1 - options.target_flops) * i / rounds
        return replace(options, target_flops=min(1.0, want * macs_original / max(macs_current, 1.0)))
    kept = [(1 - r) ** (1 / rounds) for r in (options.ratio,)]
    ratio_for = tuple((glob, 1 - (1 - r) ** (1 / rounds)) for glob, r in options.ratio_for)
    return replace(options, ratio=1 - kept[0], ratio_for=ratio_for)


def prune_finetune_cycles(model: onnx.ModelProto, options: PlanOptions, *, rounds: int, train: Dataset,
                          finetune_options: FinetuneOptions, spec: InputSpec | None = None,
                          recover_with: Recover = Recover.NONE, data: Dataset | None = None,
                          eval_data: Dataset | None = None) -> CycleResult:
    """See the module doc. ``data`` is the calibration data for recovery; ``train`` the fine-tuning data."""
    if rounds < 1:
        raise UsageError(f"`steps` {rounds} must be >= 1")
    spec = spec or InputSpec()
    shapes = resolve_input_shapes(model, spec)
    macs_original = count_costs(model, shapes).macs
    per_round = replace(finetune_options, epochs=finetune_options.epochs / rounds,
                        steps=None if finetune_options.steps is None else max(1, finetune_options.steps // rounds))
    current = model
    done: list[CycleRound] = []
    with stage(f"prune-retrain cycles: {rounds} rounds", total=rounds, unit="rounds") as progress:
        for i in range(1, rounds + 1):
            macs_current = count_costs(current, resolve_input_shapes(current, spec)).macs
            pruned = prune(current, round_options(options, i, rounds, macs_original, macs_current), spec=spec,
                           recover_with=recover_with, data=data)
            done.append(_tuned(i, pruned, model, train, eval_data, per_round, spec, macs_original))
            current = done[-1].tuned.model
            progress.advance(f"round {i}: MACs {done[-1].macs_kept:.1%}")
    return CycleResult(current, tuple(done))


def layerwise_finetune_cycles(model: onnx.ModelProto, options: PlanOptions, *, rounds: int, train: Dataset,
                              data: Dataset, finetune_options: FinetuneOptions, spec: InputSpec | None = None,
                              recover_with: Recover = Recover.NONE, eval_data: Dataset | None = None,
                              metric: Metric | None = None) -> CycleResult:
    """Layer-wise prune–retrain cycles (see the module doc). ``data`` (calibration) orders the groups and feeds
    recovery; ``train`` is the fine-tuning data."""
    if rounds < 1:
        raise UsageError(f"`steps` {rounds} must be >= 1")
    spec = spec or InputSpec()
    macs_original = count_costs(model, resolve_input_shapes(model, spec)).macs
    plan, _ = plan_pruning(model, options, spec, data)
    counts = removal_counts(plan)
    order = sensitivity_order(model, plan, data, metric, masked_model)
    chunks = [list(c) for c in np.array_split(np.asarray([g for g, _ in order], dtype=object), min(rounds, len(order)))
              if len(c)]
    criterion = Criterion(plan.criterion) if plan.criterion in {c.value for c in Criterion} else options.criterion
    per_round = replace(finetune_options, epochs=finetune_options.epochs / max(1, len(chunks)),
                        steps=None if finetune_options.steps is None else max(1, finetune_options.steps // len(chunks)))
    current, done, skipped = model, [], []
    with stage(f"layer-wise prune-retrain cycles: {len(chunks)} rounds", total=len(chunks), unit="rounds") as progress:
        for i, chunk in enumerate(chunks, start=1):
            analysis = analyze(current, spec.shapes)
            scores = score_groups(analysis, criterion, options.seed, data, current)
            groups = []
            for group in analysis.prunable:
                keep: tuple[int, ...] = tuple(range(group.channels))
                if group.id in chunk and group.id in scores:
                    keep = select_units(group, scores[group.id], group.channels - counts[group.id])
                groups.append(GroupPlan(group.id, group.channels, keep))
            present = {g.id for g in groups if g.keep != tuple(range(g.channels))}
            skipped += [g for g in chunk if g not in present]
            pruned = prune(current, plan=PruningPlan(tuple(groups), plan.criterion), spec=spec,
                           recover_with=recover_with, data=data)
            done.append(_tuned(i, pruned, model, train, eval_data, per_round, spec, macs_original))
            current = done[-1].tuned.model
            progress.advance(f"round {i}: {len(chunk)} groups, MACs {done[-1].macs_kept:.1%}")
    return CycleResult(current, tuple(done), tuple(order), tuple(skipped))
