"""The pass manager: per-pass checks catch a wrong rewrite, dumps are written, the input is not modified."""

from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs
import pytest

import onnxprune
from onnxprune.cli.main import main
from onnxprune.errors import VerificationError
from onnxprune.normalize import normalize
from onnxprune.pass_infra import CheckLevel, Checks, GraphPass, PassManager, PassResult
from onnxprune.passes import Cleanup, FoldBatchNorm
from tests.graphs import conv_bn


class ScaleFirstWeight(GraphPass):
    """A deliberately wrong pass: multiplies the first conv weight by 1.01."""

    name = "wrong"

    def call(self, graph: gs.Graph) -> PassResult:
        conv = graph.nodes[0]
        conv.inputs[1] = gs.Constant("w_wrong", np.asarray(conv.inputs[1].values) * np.float32(1.01))
        return PassResult(graph, True)


def test_numeric_check_catches_a_wrong_pass():
    m = normalize(conv_bn())
    with pytest.raises(VerificationError, match="pass wrong changed the outputs"):
        PassManager([ScaleFirstWeight()], Checks(CheckLevel.NUMERIC)).run(m)
    # without numeric checks the same pass goes through: the check is what catches it
    PassManager([ScaleFirstWeight()], Checks(CheckLevel.STRUCTURE)).run(m)


def test_records_and_dumps(tmp_path):
    m = normalize(conv_bn())
    before = m.SerializeToString()
    result = PassManager([FoldBatchNorm(), Cleanup()], Checks(CheckLevel.NUMERIC, dump_dir=tmp_path)).run(m)
    assert [r.name for r in result.records] == ["fold-batchnorm", "cleanup"]
    assert result.records[0].modified and result.comparison is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".onnxprune", "01-fold-batchnorm.onnx", "02-cleanup.onnx"]
    assert onnxprune.load(tmp_path / "01-fold-batchnorm.onnx").graph.node[0].op_type == "Conv"
    assert m.SerializeToString() == before


def test_fold_cli_json_and_verify(tmp_path, zoo_path, capsys):
    out = tmp_path / "folded.onnx"
    rc = main(["fold", str(zoo_path("resnet56", "legacy_bn")), "-o", str(out), "--verify", "--json",
               "--input-shape", "input=2x3x32x32", "--dump-dir", str(tmp_path / "dumps")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and out.is_file()
    assert report["batchnorm_before"] == 55 and report["batchnorm_after"] == 0
    assert report["folded"] == {"BatchNormalization": 55}
    assert report["simplified"] == {"Slice": 2}      # the option-A shortcuts' two Slices each, merged
    assert report["verified"] and report["max_abs_diff"] <= 1e-5 * report["max_abs_output"]
    assert (tmp_path / "dumps" / "01-simplify.onnx").is_file() and (tmp_path / "dumps" / "02-fold-batchnorm.onnx").is_file()


def test_fold_cli_text_explains_what_remains(tmp_path, zoo_path, capsys):
    out = tmp_path / "folded.onnx"
    assert main(["fold", str(zoo_path("densenet", "legacy_bn")), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "remain" in text and "kept" in text and "not a Conv" in text


def test_a_failing_pass_is_named_with_the_passes_before_it():
    from onnxprune.errors import PassError

    class Fine(GraphPass):
        name = "fine"

        def call(self, graph):
            return PassResult(graph, False)

    class Broken(GraphPass):
        name = "broken"

        def call(self, graph):
            raise KeyError("a tensor the pass expected")

    class Copying(GraphPass):
        name = "copying"

        def call(self, graph):
            return PassResult(graph.copy(), True)

    model = normalize(conv_bn())
    with pytest.raises(PassError, match=r"pass broken failed \(after fine\): KeyError") as info:
        PassManager([Fine(), Broken()]).run(model)
    assert info.value.pass_name == "broken" and info.value.before == ("fine",)
    assert isinstance(info.value.__cause__, KeyError) and info.value.exit_code == 1
    with pytest.raises(PassError, match="declared in_place but returned a different graph"):
        PassManager([Copying()]).run(model)
    Copying.in_place = False
    try:
        assert PassManager([Copying()]).run(model).model.graph.node   # declared: a new graph is accepted
    finally:
        Copying.in_place = True


def test_instruments_run_after_each_pass_that_changed_the_model():
    """A user's instrument (as the checks are): started once, then called with the model after every pass that
    changed it; an every-pass instrument also after the passes that did not."""
    from onnxprune.pass_infra import PassInstrument

    seen: list[tuple[str, str]] = []

    class Record(PassInstrument):
        def __init__(self, tag: str, every: bool) -> None:
            self.tag, self.every_pass = tag, every

        def start(self, model):
            seen.append((self.tag, "start"))

        def after_pass(self, index, pass_name, model):
            assert model.graph.node
            seen.append((self.tag, pass_name))

    m = normalize(conv_bn())
    result = PassManager([FoldBatchNorm(), Cleanup(), Cleanup()],
                         instruments=[Record("changed", False), Record("every", True)]).run(m)
    modified = [r.name for r in result.records if r.modified]
    assert modified and len(modified) < 3                  # the second cleanup has nothing left to do
    assert ("changed", "start") in seen and ("every", "start") in seen
    assert [p for t, p in seen if t == "changed" and p != "start"] == modified
    assert [p for t, p in seen if t == "every" and p != "start"] == ["fold-batchnorm", "cleanup", "cleanup"]
