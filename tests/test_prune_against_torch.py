"""Independent ground truth: pruning the digits ResNet-56 in ONNX equals zeroing the same channels' readers in
the PyTorch model it was exported from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import onnxprune
from onnxprune.plan import PlanOptions
from onnxprune.pruning import prune
from onnxprune.verify import make_session

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_pruned_onnx_matches_pytorch_with_channels_zeroed(ratio):
    from models.train_digits import RECIPES

    x = np.load(DIGITS / "digits_test.npz")["input"][:64]
    # the block-internal groups (conv1 of each block); the stage groups (residual stream, option-A padding
    # included) are covered by the masked-model oracle
    result = prune(onnxprune.load(DIGITS / "resnet56.onnx"), PlanOptions(ratio_for=(("/layers/*/conv1/Conv", ratio),)))
    from models.onnx_weights import load_weights

    net = load_weights(RECIPES["resnet56"].build(), DIGITS / "resnet56.onnx")
    net.eval()
    pruned_blocks = 0
    with torch.no_grad():
        for g in (g for g in result.plan.groups if g.id.startswith("/layers/")):
            # prunable groups of option-A ResNet-56 are the first conv of each block: /layers/layers.<i>/conv1/Conv
            block = net.layers[int(g.id.split("/")[2].split(".")[1])]
            removed = sorted(set(range(g.channels)) - set(g.keep))
            block.conv2.weight[:, removed] = 0
            pruned_blocks += bool(removed)
        expected = net(torch.from_numpy(x)).numpy()
    sess = make_session(result.model)
    got = sess.run(None, {"input": x})[0]
    assert pruned_blocks == 27
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
