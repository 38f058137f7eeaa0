"""Export the reference zoo to ONNX in the forms real users produce.

Forms (all with a dynamic batch axis; fully convolutional models also get dynamic H and W):

- ``legacy``     TorchScript exporter defaults: eval mode, constant folding on, so BN is already folded.
- ``legacy_bn``  TorchScript exporter with ``training=TrainingMode.PRESERVE``: BatchNormalization nodes kept.
- ``dynamo``     the torch.export-based exporter (``dynamo=True``).
- ``paddle``     ``legacy_bn`` with every weight stored as a Constant node instead of an initializer, the way
                 Paddle2ONNX and some TensorFlow converters write them.

Usage: python -m models.export_zoo OUT_DIR [--models a,b] [--forms legacy,dynamo] [--opset 17]
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import onnx
import torch
from onnx import helper

from models.architectures import ZOO, ZooEntry, randomize_batchnorm

FORMS = ("legacy", "legacy_bn", "dynamo", "paddle")
DEFAULT_OPSET = 17


def _dynamic_axes(entry: ZooEntry) -> dict[str, dict[int, str]]:
    axes = {0: "batch"}
    if entry.dynamic_spatial:
        axes.update({2: "height", 3: "width"})
    return {"input": axes, "output": {0: "batch"}}


def _legacy_export(model: torch.nn.Module, entry: ZooEntry, keep_bn: bool, opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_bn else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(*entry.input_shape),), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"], dynamic_axes=_dynamic_axes(entry),
                          **kwargs)
    return onnx.load_from_string(buf.getvalue())


def _dynamo_export(model: torch.nn.Module, entry: ZooEntry, opset: int) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes: dict[int, object] = {0: batch}
    if entry.dynamic_spatial:
        shapes[2] = torch.export.Dim.AUTO
        shapes[3] = torch.export.Dim.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(2, *entry.input_shape[1:]),), dynamo=True,
                                    opset_version=max(opset, 18), input_names=["input"], output_names=["output"],
                                    dynamic_shapes=({**shapes},), verbose=False, report=False)
    return program.model_proto


def initializers_to_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move every initializer into a Constant node placed before its first use (Paddle-style weights)."""
    graph = model.graph
    constants = [helper.make_node("Constant", [], [init.name], name=f"const_{i}", value=init)
                 for i, init in enumerate(graph.initializer)]
    # Constant values must not carry a name clash with the output; the tensor name is irrelevant inside.
    nodes = constants + list(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)
    # Inputs listing initializers (IR < 4 style) would now dangle.
    names = {c.output[0] for c in constants}
    keep = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(keep)
    return model


def build_model(entry: ZooEntry, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = randomize_batchnorm(entry.build(), seed)
    return model.eval()


def export(entry: ZooEntry, form: str, opset: int = DEFAULT_OPSET, model: torch.nn.Module | None = None,
           seed: int = 0) -> onnx.ModelProto:
    """Export one zoo model in one form and return the ModelProto."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    model = model if model is not None else build_model(entry, seed)
    model = model.eval()
    if form == "legacy":
        proto = _legacy_export(model, entry, keep_bn=False, opset=opset)
    elif form == "legacy_bn":
        proto = _legacy_export(model, entry, keep_bn=True, opset=opset)
    elif form == "dynamo":
        proto = _dynamo_export(model, entry, opset)
    else:
        proto = initializers_to_constants(_legacy_export(model, entry, keep_bn=True, opset=opset))
    proto.producer_name = proto.producer_name or "pytorch"
    onnx.checker.check_model(proto)
    return proto


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names")
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        entry = ZOO[name]
        for form in args.forms.split(","):
            proto = export(entry, form, args.opset)
            path = args.out_dir / f"{name}.{form}.onnx"
            onnx.save(proto, path)
            print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
