"""PyTorch weights from the committed ONNX files: the exporter keeps every parameter and buffer as an
initializer under its state-dict name, so the ONNX file is the one copy of a trained model (no ``.pt`` beside it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def load_weights(module: torch.nn.Module, onnx_path: str | Path) -> torch.nn.Module:
    """Copy ``module``'s parameters and buffers from the initializers (or Constant nodes) of the same name in
    ``onnx_path``; ``num_batches_tracked`` is not exported and is left as it is. KeyError names what is missing,
    ValueError a shape that differs."""
    model = onnx.load(str(onnx_path))
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
    state = module.state_dict()
    wanted = [k for k in state if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in values]
    if missing:
        raise KeyError(f"{onnx_path}: no initializer for {', '.join(missing[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    loaded = {}
    for key in wanted:
        array = np.array(numpy_helper.to_array(values[key]))
        if tuple(array.shape) != tuple(state[key].shape):
            raise ValueError(f"{onnx_path}: {key} has shape {array.shape}, the module {tuple(state[key].shape)}")
        loaded[key] = torch.from_numpy(array).to(state[key].dtype)
    module.load_state_dict(loaded, strict=False)
    return module
