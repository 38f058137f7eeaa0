"""Prune–retrain cycles (the notes' strategies 1 + 4): ``rounds`` times, prune a share of the target from the
current model (recovering by least squares when asked), then fine-tune it by distillation from the original.

Rule: round ``i`` of ``K`` leaves ``1 - (1 - F) * i / K`` of the original MACs for ``--target-flops F``, and keeps
``(1 - r) ** (i / K)`` of each group's channels for ``--ratio r``; each round fine-tunes ``epochs / K`` epochs, so
the total training budget equals one-shot pruning followed by ``epochs`` epochs. Unlike the training-free
``iterative`` schedule (which rewrites the original each round), each round starts from the fine-tuned model
of the round before: its weights carry over. Limits: ``--ratio-for`` ratios compound the same way; explicit plans
(``--plan``, ``--sensitivity``) prune once, so they are refused here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import onnx

from onnxprune.data import Dataset
from onnxprune.errors import UsageError
from onnxprune.flops import count_costs
from onnxprune.plan import PlanOptions
from onnxprune.progress import stage
from onnxprune.prune import PruneResult, prune
from onnxprune.recover import Recover
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

    def to_json(self) -> list[dict[str, object]]:
        return [{"round": r.round, "macs_kept": round(r.macs_kept, 4), "finetune_steps": r.tuned.steps,
                 "finetune_seconds": round(r.tuned.seconds, 2), "before": r.tuned.before, "after": r.tuned.after}
                for r in self.rounds]


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
        raise UsageError(f"--steps {rounds} must be >= 1")
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
            tuned = finetune(pruned.model, train, teacher=model, eval_data=eval_data, options=per_round)
            current = tuned.model
            macs = count_costs(current, resolve_input_shapes(current, spec)).macs
            done.append(CycleRound(i, macs / max(macs_original, 1), pruned, tuned))
            progress.advance(f"round {i}: MACs {macs / max(macs_original, 1):.1%}")
    return CycleResult(current, tuple(done))
