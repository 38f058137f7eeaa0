"""Training ONNX models as they are: the differentiable engine (:mod:`.engine`) and distillation fine-tuning
(:mod:`.train`). Needs PyTorch (``pip install 'onnxprune[finetune]'``); nothing else in onnxprune imports it.

Your own training loop on the engine::

    import onnx, torch
    from onnxprune.training import OnnxModule, verify_engine, write_back

    model = onnx.load("pruned.onnx")
    net = OnnxModule(model)                      # float weights as torch Parameters, keyed by ONNX name
    verify_engine(model, net, {"input": x0})     # refuses a model the engine does not reproduce
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for x, y in loader:
        logits = net({"input": x})[model.graph.output[0].name]
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(); loss.backward(); opt.step()
    onnx.save(write_back(model, net), "trained.onnx")   # same graph, new weight values
"""

from onnxprune.training.engine import (
           OnnxModule,
           check_supported,
           trainable_names,
           verify_engine,
           write_back,
)
from onnxprune.training.train import (
           FinetuneOptions,
           FinetuneResult,
           Optimizer,
           Schedule,
           finetune,
)

__all__ = ["FinetuneOptions", "FinetuneResult", "OnnxModule", "Optimizer", "Schedule", "check_supported",
           "finetune", "trainable_names", "verify_engine", "write_back"]
