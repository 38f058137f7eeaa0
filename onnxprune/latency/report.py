"""What a latency-planned prune reports: the requested and predicted latency, the latency measured interleaved
against the original, and each group's count and the steps it chose from."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxprune.latency.measure import paired_timing
from onnxprune.latency.planner import FLOOR_SLACK
from onnxprune.latency.sensitivity import StepLosses
from onnxprune.targets import TARGETS

#: Predicted and measured latency ratios agree when within this relative distance.
AGREEMENT = 0.10
#: A measured ratio further than this from the request is reported as missed.
MISSED = 0.05


@dataclass(frozen=True)
class GroupLatency:
    group: str
    channels: int
    kept: int
    steps: tuple[int, ...]   # the counts the planner could choose from (non-dominated), ascending

    def to_json(self) -> dict[str, object]:
        return {"group": self.group, "channels": self.channels, "kept": self.kept, "steps": list(self.steps)}


@dataclass(frozen=True)
class LatencyReport:
    """``requested``: the target latency ratio (None: counts aligned to steps for another target). Times in
    ms, ratios pruned / original. ``measured_*``: interleaved medians over ``rounds`` rounds on random inputs
    at ``input_shapes`` on ``target`` with ``threads`` threads; ``paired_ratio``: the median of the rounds'
    ratios (:func:`onnxprune.latency.measure.paired_timing`), the measured ratio when present. ``tries``: the plans measured while correcting
    the budget (``onnxprune.pruning.plan_for_latency``). ``losses``: with ``allocate`` sensitivity, each group's
    loss measured at its steps (:mod:`onnxprune.latency.sensitivity`). ``floor_ms``: predicted with every group
    at its smallest step (a plan within ``FLOOR_SLACK`` of it is the planner's floor plan)."""

    target: str
    threads: int
    requested: float | None
    original_ms: float
    predicted_ms: float
    groups: tuple[GroupLatency, ...]
    measured_original_ms: float | None = None
    measured_ms: float | None = None
    rounds: int = 0
    tries: tuple[tuple[float, float, float], ...] = ()   # (budget planned for, predicted, measured) per try
    losses: StepLosses | None = None
    paired_ratio: float | None = None
    floor_ms: float | None = None

    @property
    def floor_ratio(self) -> float | None:
        return None if self.floor_ms is None else self.floor_ms / self.original_ms

    @property
    def at_floor(self) -> bool:
        """The plan is the planner's floor plan: predicted within ``FLOOR_SLACK`` of the floor (every group at its
        smallest step when the floor is not known)."""
        if self.floor_ms is None:
            return all(g.kept == g.steps[0] for g in self.groups if g.steps)
        return self.predicted_ms <= self.floor_ms * (1 + FLOOR_SLACK) * (1 + 1e-9)

    @property
    def predicted_ratio(self) -> float:
        return self.predicted_ms / self.original_ms

    @property
    def measured_ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.measured_ms is None or not self.measured_original_ms:
            return None
        return self.measured_ms / self.measured_original_ms

    @property
    def agrees(self) -> bool | None:
        """Predicted and measured ratios within :data:`AGREEMENT` of each other (None: not measured)."""
        measured = self.measured_ratio
        return None if measured is None else bool(abs(self.predicted_ratio - measured) <= AGREEMENT * measured)

    def notes(self) -> list[str]:
        out = []
        measured = self.measured_ratio
        achieved = measured if measured is not None else self.predicted_ratio
        verb = 'measures' if measured is not None else 'is predicted at'
        if self.requested is not None and self.at_floor and achieved > self.requested * 1.001:
            if self.floor_ratio is None:
                out.append(f"latency target {self.requested:g} not reachable: with every group at its smallest "
                           f"latency step the model {verb} {achieved:.3f} of the original")
            else:
                out.append(f"latency target {self.requested:g} not reachable: every group at its smallest latency "
                           f"step is predicted at {self.floor_ratio:.3f} of the original; the plan stops within "
                           f"{FLOOR_SLACK:.0%} of that (the last steps save the least time per importance lost) and "
                           f"{verb} {achieved:.3f}")
        elif self.requested is not None and measured is not None and abs(measured / self.requested - 1) > MISSED:
            out.append(f"latency target {self.requested:g}: the closest plan of {len(self.tries) or 1} measured "
                       f"{measured:.3f} (the plans between are missing: each group's latency steps are coarse, or "
                       f"the machine is busy)")
        if measured is not None and not self.agrees:
            out.append(f"latency: predicted {self.predicted_ratio:.3f} of the original, measured {measured:.3f} "
                       f"(more than {AGREEMENT:.0%} apart: the machine may be busy, or the table was profiled under "
                       f"other conditions; profile again, or measure with bench)")
        return out

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "threads": self.threads, "requested": self.requested,
                "original_ms": self.original_ms, "predicted_ms": self.predicted_ms,
                "predicted_ratio": self.predicted_ratio, "measured_original_ms": self.measured_original_ms,
                "measured_ms": self.measured_ms, "measured_ratio": self.measured_ratio, "rounds": self.rounds,
                "agrees": self.agrees, "floor_ratio": self.floor_ratio,
                "tries": [{"budget": b, "predicted": p, "measured": m} for b, p, m in self.tries],
                "groups": [g.to_json() for g in self.groups]} | (
                    {"sensitivity": self.losses.to_json()} if self.losses is not None else {})


def measured(report: LatencyReport, original: onnx.ModelProto, pruned: onnx.ModelProto,
             shapes: dict[str, tuple[int, ...]]) -> LatencyReport:
    """``report`` with the original and the pruned model timed interleaved (on the report's target)."""
    from dataclasses import replace

    from onnxprune.latency.profile import calibration_model

    target = TARGETS.get(report.target, TARGETS["cpu"])
    timing = paired_timing({"original": calibration_model(original, target),
                            "pruned": calibration_model(pruned, target)}, "original", target, report.threads, shapes)
    return replace(report, measured_original_ms=timing.ms["original"], measured_ms=timing.ms["pruned"],
                   rounds=timing.rounds, paired_ratio=timing.ratios["pruned"])
