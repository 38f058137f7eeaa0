"""Every zoo model in every export form, at 30% and 50% with every criterion: the pruned model passes the full
checker, loads in ONNX Runtime and equals the masked original within fp32 rounding."""

from __future__ import annotations

from functools import lru_cache

import onnx
import pytest

import onnxprune
from models.architectures import ZOO
from models.zoo_cache import zoo_model
from onnxprune.importance import Criterion
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec
from tests.conftest import ZOO_CASES


@lru_cache(maxsize=4)
def loaded(name: str, form: str) -> onnx.ModelProto:
    return onnxprune.load(zoo_model(name, form))


# the rewrite is criterion-independent (other criteria pick other channels: run them on one form); the
# data-driven criteria are covered in test_schedule.py
CASES = [(name, form, ratio, Criterion.L1) for name, form in ZOO_CASES for ratio in (0.3, 0.5)] + \
    [(name, "legacy_bn", 0.5, c) for name in ZOO for c in Criterion
     if not c.needs_data and c not in (Criterion.L1, Criterion.UNIFORM)]   # uniform: keeps the first channels


@pytest.mark.parametrize("name,form,ratio,criterion", CASES,
                         ids=[f"{n}-{f}-{r}-{c.value}" for n, f, r, c in CASES])
def test_zoo_prune_verifies(name, form, ratio, criterion):
    model = loaded(name, form)
    result = prune(model, PlanOptions(ratio=ratio, criterion=criterion), spec=InputSpec(batch=2), verify=True)
    onnx.checker.check_model(result.model, full_check=True)
    report = result.report
    assert report.max_abs_diff <= 1e-5 * report.max_abs_output
    assert report.groups_pruned > 0 and report.flops_after < report.flops_before
    assert [i.name for i in result.model.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]
