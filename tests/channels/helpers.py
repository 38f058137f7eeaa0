"""Shared helpers of the channel-rule tests: the groups of a model, and a 50% prune checked against the masked
original."""

from __future__ import annotations

import onnx

from onnxprune.channels import analyze
from onnxprune.normalize import normalize
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec


def groups(m: onnx.ModelProto) -> dict[str, tuple[int, bool, str]]:
    return {g.id: (g.channels, g.prunable, g.reason) for g in analyze(normalize(m)).groups}


def prune_verified(m: onnx.ModelProto, ratio: float = 0.5, **kw):
    result = prune(normalize(m), PlanOptions(ratio=ratio, **kw), spec=InputSpec(batch=2), verify=True)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.report.max_abs_diff <= 1e-5 * result.report.max_abs_output
    return result
