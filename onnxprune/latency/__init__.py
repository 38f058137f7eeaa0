"""Latency-aware planning: per-layer latency tables measured with ONNX Runtime on the target
(:mod:`.profile`, :mod:`.table`), the latency model that predicts a pruned model's latency from them
(:mod:`.model`), the planners that prune for a latency budget (:mod:`.planner`), and the interleaved check of
the prediction (:mod:`.measure`)."""
