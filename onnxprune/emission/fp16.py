"""float16 for CUDA through ONNX Runtime's own converter (``onnxruntime.transformers.float16``: it ships with
onnxruntime, so no extra dependency, and it is what ORT's transformer optimizer uses). Inputs and outputs stay
float32; ops that overflow or lose too much precision in float16 stay float32 (``FP16_BLOCK_LIST``)."""

from __future__ import annotations

import onnx

from onnxprune.normalize import toposort
from onnxprune.signals import import_deferred

#: Kept in float32, on top of the converter's defaults: reductions and pooling sums can exceed 65504; Exp/Pow/Log
#: and reciprocal/sqrt overflow or lose precision; Resize's coordinate math needs float32; normalizations compute
#: variances; index-producing and range ops are not float math.
FP16_BLOCK_LIST = ("Resize", "Upsample", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                   "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "Exp", "Pow", "Log", "Sqrt", "Reciprocal",
                   "InstanceNormalization", "LayerNormalization", "GroupNormalization", "Range", "CumSum", "TopK",
                   "NonMaxSuppression", "RoiAlign", "Softplus")


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    float16 = import_deferred("onnxruntime.transformers.float16")
    DEFAULT_OP_BLOCK_LIST, convert_float_to_float16 = float16.DEFAULT_OP_BLOCK_LIST, float16.convert_float_to_float16

    out = convert_float_to_float16(model, keep_io_types=True,
                                   op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_BLOCK_LIST))
    toposort(out.graph)  # the converter appends its Casts at the end of the node list
    return out
