"""Typed steps: options from a mapping (as a recipe gives them) are checked against the fields, and a step run
through the library equals the subcommand run through the CLI."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnxprune.cli.main import main
from onnxprune.steps import (
    STEPS,
    CompressStep,
    EmitStep,
    FoldStep,
    PruneStep,
    StepContext,
    StepOptionError,
)

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


@pytest.mark.parametrize("cls,options,message", [
    (PruneStep, {"targt-flops": 0.7}, r"targt-flops: unknown option of 'onnxprune prune' \(did you mean target-flops"),
    (PruneStep, {"criterion": "l3"}, r"criterion: 'l3' is not one of l1, l2"),
    (PruneStep, {"ratio": [0.1, 0.2]}, r"ratio: takes one value, not a list"),
    (PruneStep, {"steps": 2.5}, r"steps: expected int, got 2.5"),
    (FoldStep, {"verify": "yes"}, r"verify: a flag: expected true or false"),
    (EmitStep, {"target": {"cpu": 1}}, r"target: takes one value, not a mapping"),
])
def test_bad_options_name_the_key(cls, options, message):
    with pytest.raises(StepOptionError, match=message):
        cls.from_options(options, "steps[0]")


def test_options_are_coerced_to_the_fields():
    prune = PruneStep.from_options({"target_flops": "0.7", "ratio-for": "layer3*=0.5", "global": True,
                                    "data": "calib.npz", "round-to": 8})
    assert prune == PruneStep(target_flops=0.7, ratio_for=("layer3*=0.5",), global_ranking=True,
                              data=Path("calib.npz"), round_to=8)
    assert EmitStep.from_options({"int8": True}).int8 == "static"      # `int8: true` is static, as on the CLI
    assert CompressStep.from_options({"global": True, "sparsity": 0.9}).global_sparsity
    assert set(STEPS) == {"fold", "profile", "prune", "sensitivity", "finetune", "compress", "emit", "bench"}


def test_a_step_in_the_library_writes_what_the_subcommand_writes(tmp_path):
    step = PruneStep(ratio=0.3, round_to=8)
    done = step.run(StepContext(DIGITS / "studentnet.onnx", tmp_path / "lib.onnx"))
    assert main(["prune", str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "cli.onnx"), "--ratio", "0.3",
                 "--round-to", "8", "-q"]) == 0
    assert done.model == tmp_path / "lib.onnx" and done.files == (tmp_path / "lib.onnx",)
    lib, cli = onnx.load(tmp_path / "lib.onnx"), onnx.load(tmp_path / "cli.onnx")
    assert lib.graph.SerializeToString() == cli.graph.SerializeToString()
    assert done.report["flops_after"] < done.report["flops_before"]
