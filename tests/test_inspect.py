"""MACs / params counting and the inspect command, checked against an independent count in PyTorch."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import onnxprune
from models.architectures import ZOO
from models.export_zoo import build_model
from onnxprune.cli.main import main
from onnxprune.verify import InputSpec


def torch_macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    """MACs of Conv/ConvTranspose/Linear layers counted with forward hooks (independent of onnxprune)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):
            total += inp[0].numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    with torch.no_grad():
        module(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["resnet18", "resnet56", "mobilenet_v2", "convtranspose_decoder", "flatten_gemm",
                                  "resnext", "mobilenet_v3_se"])
@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_macs_match_pytorch_count(zoo_path, name, form):
    entry = ZOO[name]
    shape = (3,) + entry.input_shape[1:]
    spec = InputSpec({"input": shape}) if entry.dynamic_spatial else InputSpec(batch=3)
    summary = onnxprune.inspect(onnxprune.load(zoo_path(name, form)), spec)
    assert summary.flops == torch_macs(build_model(entry), shape)
    assert not summary.flops_unresolved


def test_params_count_float_initializers(zoo_path):
    entry = ZOO["resnet18"]
    model = build_model(entry)
    # legacy export folds BN: every conv gains a bias of Cout; BN parameters disappear
    expected = sum(m.weight.numel() + m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)) \
        + sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    assert onnxprune.inspect(onnxprune.load(zoo_path("resnet18", "legacy"))).params == expected


def test_dynamic_spatial_dims_are_reported_unresolved(zoo_path):
    summary = onnxprune.inspect(onnxprune.load(zoo_path("studentnet", "legacy_bn")))
    assert summary.flops_unresolved and summary.flops == 0


def test_inspect_json_cli(zoo_path, capsys):
    rc = main(["inspect", str(zoo_path("studentnet", "legacy_bn")), "--json", "--input-shape", "input=1x3x32x32"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["flops"] == torch_macs(build_model(ZOO["studentnet"]), (1, 3, 32, 32))
    assert data["params"] > 0
    assert data["batchnorm"]["total"] == 8 and data["batchnorm"]["foldable"] == 8
    assert data["ops"]["Conv"] == 15
    assert data["inputs"][0]["shape"] == ["batch", 3, "height", "width"]


def test_inspect_text_lists_unfoldable_batchnorms(zoo_path, capsys):
    assert main(["inspect", str(zoo_path("densenet", "legacy_bn"))]) == 0
    out = capsys.readouterr().out
    assert "not foldable" in out and "BatchNormalization" in out


def test_quantized_layers_are_counted(tmp_path):
    """QDQ int8 models keep their MACs and count int8 weights as parameters."""
    from pathlib import Path

    from onnxprune.emission import EmitOptions, Int8, Target, emit

    digits = Path(__file__).resolve().parents[1] / "models" / "digits"
    emit(digits / "vgg16_bn.onnx", tmp_path / "out", EmitOptions(Target.CPU, int8=Int8.STATIC,
                                                                  data=digits / "digits_calib.npz"))
    spec = InputSpec({"input": (1, 3, 32, 32)})
    float_summary = onnxprune.inspect(onnxprune.load(digits / "vgg16_bn.onnx"), spec)
    int8_summary = onnxprune.inspect(onnxprune.load(tmp_path / "out" / "model.int8.onnx"), spec)
    assert int8_summary.flops == float_summary.flops
    assert abs(int8_summary.params - float_summary.params) / float_summary.params < 0.02
