"""onnxprune: make exported ONNX CNNs smaller and faster.

The public API in three lines::

    import onnxprune as op
    m = op.prune(op.fold(op.load("m.onnx")).model, op.PlanOptions(target_flops=0.7), data=calib).model
    op.save(m, "out.onnx")

Every function that transforms a model takes a ``ModelProto`` and returns a result holding the new one;
verification is asked for the same way everywhere (``checks=Checks(CheckLevel.NUMERIC)`` on the pass pipelines,
``verify=True`` on prune). Names below load their module on first use (``import onnxprune`` stays light).
"""

from __future__ import annotations

import importlib
from typing import Any

from onnxprune import _checkout  # noqa: F401 - first: onnxprune.passes from a plain checkout too
from onnxprune.api import FoldResult, finetune, fold, inspect, load, save
from onnxprune.errors import OnnxPruneError
from onnxprune.pass_infra import CheckLevel, Checks
from onnxprune.verify import InputSpec

__version__ = "0.1.0"

#: name -> (module, attribute), imported on first access
_LAZY = {
    "analyze": ("onnxprune.channels", "analyze"),
    "prune": ("onnxprune.pruning", "prune"),
    "PlanOptions": ("onnxprune.plan", "PlanOptions"),
    "PruningPlan": ("onnxprune.plan", "PruningPlan"),
    "Align": ("onnxprune.plan", "Align"),
    "profile": ("onnxprune.latency.profile", "profile_model"),
    "LatencyTable": ("onnxprune.latency.table", "LatencyTable"),
    "MeasurementCache": ("onnxprune.latency.table", "MeasurementCache"),
    "TARGETS": ("onnxprune.targets", "TARGETS"),
    "Criterion": ("onnxprune.importance", "Criterion"),
    "Recover": ("onnxprune.recover", "Recover"),
    "Schedule": ("onnxprune.schedule", "Schedule"),
    "ScheduleOptions": ("onnxprune.schedule", "ScheduleOptions"),
    "sensitivity": ("onnxprune.sensitivity_analysis", "run_sensitivity"),
    "emit": ("onnxprune.emission", "emit"),
    "EmitOptions": ("onnxprune.emission", "EmitOptions"),
    "Target": ("onnxprune.emission", "Target"),
    "Int8": ("onnxprune.emission", "Int8"),
    "compress": ("onnxprune.compression", "compress"),
    "decompress": ("onnxprune.compression", "decompress"),
    "CompressOptions": ("onnxprune.compression", "CompressOptions"),
    "Sharing": ("onnxprune.compression", "Sharing"),
    "ConnectionPruning": ("onnxprune.passes.prune_connections", "ConnectionPruning"),
    "bench": ("onnxprune.benchmark", "run_benchmark"),
    "BenchOptions": ("onnxprune.benchmark", "BenchOptions"),
    "load_data": ("onnxprune.data", "load_data"),
    "Dataset": ("onnxprune.data", "Dataset"),
    "ImagePreprocess": ("onnxprune.data", "ImagePreprocess"),
    "load_recipe": ("onnxprune.recipe", "load_recipe"),
    "run_recipe": ("onnxprune.zoo.model_run", "run_recipe"),
    "run_zoo": ("onnxprune.zoo", "run_zoo"),
    "discover": ("onnxprune.zoo", "discover"),
    "ZooOptions": ("onnxprune.zoo", "ZooOptions"),
    "STEPS": ("onnxprune.steps", "STEPS"),
    "StepContext": ("onnxprune.steps", "StepContext"),
}

__all__ = ["CheckLevel", "Checks", "FoldResult", "InputSpec", "OnnxPruneError", "finetune", "fold", "inspect",  # noqa: PLE0604
           "load", "save", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
