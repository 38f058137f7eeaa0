"""The committed digits-trained models: their stated accuracy holds, and folding keeps every prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnxprune
from onnxprune import CheckLevel, Checks, InputSpec
from onnxprune.verify import make_session

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
RESULTS = json.loads((DIGITS / "results.json").read_text())


@pytest.fixture(scope="module")
def test_split():
    data = np.load(DIGITS / "digits_test.npz")
    return data["input"], data["labels"]


def logits(model, x):
    sess = make_session(model)
    return sess.run(None, {"input": x})[0]


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_stated_accuracy_and_fold_preserves_predictions(name, test_split):
    x, labels = test_split
    assert x.shape == (450, 3, 32, 32) and labels.shape == (450,)
    model = onnxprune.load(DIGITS / f"{name}.onnx")
    before = logits(model, x)
    accuracy = float((before.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(RESULTS[name]["test_accuracy"], abs=1e-4)
    assert accuracy > 0.95
    folded = onnxprune.fold(model, Checks(CheckLevel.NUMERIC, inputs=InputSpec({"input": (4, 3, 32, 32)})))
    assert not any(n.op_type == "BatchNormalization" for n in folded.model.graph.node)
    after = logits(folded.model, x)
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()
    assert np.array_equal(after.argmax(1), before.argmax(1))


def test_split_is_the_documented_one(test_split):
    """The committed split is exactly what models/train_digits.py produces (fixed random_state)."""
    import sklearn  # noqa: F401 - a declared dev dependency: missing must fail, not skip

    from models.train_digits import load_digits_split

    _, _, x_te, y_te = load_digits_split()
    x, labels = test_split
    assert np.array_equal(labels, y_te) and np.allclose(x, x_te)
