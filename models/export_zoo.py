"""Export the reference zoo to ONNX in the forms real users produce.

Forms (dynamic batch axis unless said otherwise; fully convolutional models also get dynamic H and W,
text-line recognizers a dynamic W):

- ``legacy``          TorchScript exporter defaults: eval mode, constant folding on, so BN is already folded.
- ``legacy_bn``       TorchScript exporter with ``training=TrainingMode.PRESERVE``: BatchNormalization kept.
- ``dynamo``          the torch.export-based exporter (``dynamo=True``) with dynamic shapes.
- ``paddle``          what Paddle2ONNX writes: every weight in a Constant node, each conv bias added as
                      ``Add(conv, Reshape(bias, [1, C, 1, 1]))``, the batch dim written as ``-1`` (a dim_value,
                      not a name) and one dim_param ``?`` reused for every other dynamic axis (H and W).
- ``fixed``           TorchScript exporter, BN kept, no dynamic axes at all: batch 1 is part of the model.
- ``dynamo_default``  ``torch.onnx.export(model, (x,), path)`` with every default: dynamo, opset 20, fixed shapes,
                      weights in an external ``.data`` file (:func:`saves_external_data`).
- ``identity``        ``legacy_bn`` of a model whose BN layers are fresh (scale 1, bias 0, mean 0, var 1): the
                      exporter de-duplicates the equal tensors and reads the copies through ``Identity`` nodes;
                      every other parameter is read through an ``Identity`` as well.
- ``noshape``         ``legacy_bn`` whose graph outputs carry no type or shape (ONNX Runtime runs such files,
                      the ONNX checker refuses them).

Usage: python -m models.export_zoo OUT_DIR [--models a,b] [--forms legacy,dynamo] [--opset 17]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from models.architectures import ZOO, ZooEntry, randomize_batchnorm

FORMS = ("legacy", "legacy_bn", "dynamo", "paddle", "fixed", "dynamo_default", "identity", "noshape")
DEFAULT_OPSET = 17


def saves_external_data(form: str) -> bool:
    """Whether the form is written as ``NAME.onnx`` + ``NAME.onnx.data`` (the dynamo exporter's default)."""
    return form == "dynamo_default"


def _dynamic_axes(entry: ZooEntry) -> dict[str, dict[int, str]]:
    axes = {0: "batch"}
    if entry.dynamic_spatial:
        axes.update({2: "height", 3: "width"})
    if entry.dynamic_width:
        axes[3] = "width"
        return {"input": axes, "output": {0: "steps", 1: "batch"}}
    return {"input": axes, "output": {0: "batch"}}


def _legacy_export(model: torch.nn.Module, entry: ZooEntry, keep_bn: bool, opset: int,
                   dynamic: bool = True) -> onnx.ModelProto:
    buf = io.BytesIO()
    kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_bn else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(*entry.input_shape),), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes=_dynamic_axes(entry) if dynamic else None, **kwargs)
    return onnx.load_from_string(buf.getvalue())


def _dynamo_default_export(model: torch.nn.Module, entry: ZooEntry) -> onnx.ModelProto:
    """``torch.onnx.export(model, (x,), path)``, nothing else: read back with its external data."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (torch.randn(*entry.input_shape),), str(path))
        return onnx.load(str(path))


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


def paddle_style(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a ``legacy_bn`` export into what Paddle2ONNX writes (see the module doc)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        bias = node.input.pop()
        conv_out = node.output[0]
        node.output[0] = f"{conv_out}_nobias"
        shape = f"{bias}_shape"
        graph.initializer.append(numpy_helper.from_array(np.asarray([1, -1, 1, 1], dtype=np.int64), shape))
        nodes.append(helper.make_node("Reshape", [bias, shape], [f"{bias}_reshaped"], name=f"{node.name}_bias_reshape"))
        nodes.append(helper.make_node("Add", [node.output[0], f"{bias}_reshaped"], [conv_out],
                                      name=f"{node.name}_bias_add"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for vi in (*graph.input, *graph.output):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):
                if axis == 0 and vi.name in {i.name for i in graph.input}:
                    d.dim_value = -1
                else:
                    d.dim_param = "?"
    return initializers_to_constants(model)


def alias_parameters(model: onnx.ModelProto) -> onnx.ModelProto:
    """Read every initializer through an ``Identity`` node, as exporters do for de-duplicated tensors."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    aliases: list[onnx.NodeProto] = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in inits:
                alias = f"{name}_alias{len(aliases)}"
                aliases.append(helper.make_node("Identity", [name], [alias], name=f"Identity_alias{len(aliases)}"))
                node.input[i] = alias
    nodes = aliases + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def strip_output_types(model: onnx.ModelProto) -> onnx.ModelProto:
    for out in model.graph.output:
        out.ClearField("type")
    return model


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


def build_model(entry: ZooEntry, seed: int = 0, randomize_bn: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = entry.build()
    if randomize_bn:
        model = randomize_batchnorm(model, seed)
    return model.eval()


def export(entry: ZooEntry, form: str, opset: int = DEFAULT_OPSET, model: torch.nn.Module | None = None,
           seed: int = 0) -> onnx.ModelProto:
    """Export one zoo model in one form and return the ModelProto."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    given = model
    model = (model if model is not None else build_model(entry, seed)).eval()
    if form == "legacy":
        proto = _legacy_export(model, entry, keep_bn=False, opset=opset)
    elif form == "legacy_bn":
        proto = _legacy_export(model, entry, keep_bn=True, opset=opset)
    elif form == "dynamo":
        proto = _dynamo_export(model, entry, opset)
    elif form == "paddle":
        proto = paddle_style(_legacy_export(model, entry, keep_bn=True, opset=opset))
    elif form == "fixed":
        proto = _legacy_export(model, entry, keep_bn=True, opset=opset, dynamic=False)
    elif form == "dynamo_default":
        proto = _dynamo_default_export(model, entry)
    elif form == "identity":
        fresh = build_model(entry, seed, randomize_bn=False) if given is None else model
        proto = alias_parameters(_legacy_export(fresh, entry, keep_bn=True, opset=opset))
    else:
        proto = strip_output_types(_legacy_export(model, entry, keep_bn=True, opset=opset))
    proto.producer_name = proto.producer_name or "pytorch"
    if form != "noshape":
        onnx.checker.check_model(proto)
    return proto


def save(proto: onnx.ModelProto, path: Path, form: str) -> None:
    """Write ``proto`` as the form is distributed (external data for ``dynamo_default``)."""
    if saves_external_data(form):
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(proto, str(path))


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
            save(proto, path, form)
            print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
