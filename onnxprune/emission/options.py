"""What ``emit`` is asked to produce."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.data import ImagePreprocess


class Target(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"
    MOBILE = "mobile"


class Int8(enum.Enum):
    NONE = "none"
    STATIC = "static"    # QDQ, per-channel weights, activations calibrated on --data
    DYNAMIC = "dynamic"  # weights int8, activations quantized at run time


class CalibrationMethod(enum.Enum):
    """How static int8 sets activation ranges (ORT's calibrators); AUTO measures each on the evaluation data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    AUTO = "auto"


class Style(enum.Enum):
    FIXED = "fixed"      # ORT format with all optimizations baked in (plain CPU EP)
    RUNTIME = "runtime"  # basic optimizations saved, the rest replayed at run time (NNAPI / CoreML)


@dataclass(frozen=True)
class EmitOptions:
    target: Target
    int8: Int8 = Int8.NONE
    data: Path | None = None
    eval_data: Path | None = None  # defaults to ``data``
    random_calibration: bool = False
    for_this_machine: bool = False
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    style: Style = Style.FIXED
    force: bool = False
    calibration_samples: int = 256
    preprocess: ImagePreprocess = ImagePreprocess()  # for folders of images
    #: static int8: keep the costliest nodes float until the metric drops by at most this many points on the
    #: evaluation data (None: one shot, only the default float nodes)
    max_drop: float | None = None
    metric: str | None = None        # for max_drop: a built-in metric name or MODULE:FUNCTION (default by output)
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    symmetric_activations: bool = False   # int8 activations with zero point 0 (else uint8, asymmetric)
