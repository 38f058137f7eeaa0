"""Batch rewriting of a model zoo: recipes run over many models by local workers or Ray, with a summary."""

from onnxprune.zoo.backends import Limits
from onnxprune.zoo.jobs import ModelJob, discover
from onnxprune.zoo.model_run import run_model
from onnxprune.zoo.runner import Backend, ZooOptions, ZooRun, run_zoo

__all__ = ["Backend", "Limits", "ModelJob", "ZooOptions", "ZooRun", "discover", "run_model", "run_zoo"]
