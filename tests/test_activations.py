"""The activation stream gives, segment by segment, the same values as running the whole model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxprune
from models.zoo_cache import zoo_model
from onnxprune.activations import ActivationStream, sample_axes
from onnxprune.data import Dataset
from onnxprune.verify import session_with_outputs

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


def dataset(model, shape: tuple[int, ...], n: int = 40) -> Dataset:
    name = model.graph.input[0].name
    return Dataset({name: np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)}, None)


def whole(model, names: list[str], data: Dataset) -> dict[str, np.ndarray]:
    """One run of the whole model over every sample."""
    session = session_with_outputs(model, names)
    return dict(zip(names, session.run(names, data.inputs)))


@pytest.mark.parametrize("name,shape", [("digits_resnet56", (3, 32, 32)), ("crnn", (1, 32, 96)),
                                        ("shufflenet_v2", (3, 64, 64)), ("unet", (3, 64, 64))])
def test_stream_equals_whole_model_runs(name, shape):
    model = onnxprune.load(DIGITS / "resnet56.onnx" if name == "digits_resnet56" else zoo_model(name, "legacy"))
    data = dataset(model, shape)
    axes = sample_axes(model, {model.graph.input[0].name})
    names = list(dict.fromkeys([n.output[0] for n in model.graph.node if n.output[0] in axes][::3]
                               + [model.graph.output[0].name]))
    stream = ActivationStream(model, data)
    got = {x: stream.get(x) for x in names}        # in topological order, as recovery asks
    want = whole(model, names, data)
    for x in names:
        assert got[x].shape == want[x].shape, x
        scale = max(float(np.abs(want[x]).max()), 1e-6)
        assert float(np.abs(got[x].astype(np.float64) - want[x]).max()) <= 1e-4 * scale, x


def test_sample_axis_follows_a_sequence_first_rnn():
    model = onnxprune.load(zoo_model("crnn", "legacy"))
    axes = sample_axes(model, {model.graph.input[0].name})
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert axes[model.graph.input[0].name] == 0 and axes[lstm.input[0]] == 1    # (T, N, C)


def test_metrics_outputs_are_sample_first_for_a_sequence_first_model():
    """A CTC head's (T, N, C) output over more samples than one run takes: not concatenated along T."""
    from onnxprune.metrics import outputs

    model = onnxprune.load(zoo_model("crnn", "legacy"))
    data = dataset(model, (1, 32, 96), n=100)
    got = outputs(model, data)
    want = whole(model, [model.graph.output[0].name], data)[model.graph.output[0].name]
    assert got.shape == (100, want.shape[0], want.shape[2])
    assert np.allclose(got, np.moveaxis(want, 1, 0), atol=1e-4)
