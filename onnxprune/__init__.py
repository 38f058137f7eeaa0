"""onnxprune: make exported ONNX CNNs smaller and faster."""

from onnxprune.api import FoldResult, finetune, fold, inspect, load, save
from onnxprune.errors import OnnxPruneError
from onnxprune.pass_infra import CheckLevel, Checks
from onnxprune.verify import InputSpec

__version__ = "0.1.0"
__all__ = ["CheckLevel", "Checks", "FoldResult", "InputSpec", "OnnxPruneError", "finetune", "fold", "inspect", "load", "save",
           "__version__"]
