"""The last layer before each graph output (the classifier or head): what int8 keeps float and recovery refits
last."""

from __future__ import annotations

import onnx

#: ops between a head layer and the graph output: bias Adds, data movement, output activations
TOWARD_OUTPUT = frozenset({"Add", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Softmax",
                           "LogSoftmax", "Sigmoid", "Relu", "Cast"})


def layers_before_outputs(model: onnx.ModelProto, ops: frozenset[str] = frozenset({"Conv", "ConvTranspose",
                                                                                   "Gemm", "MatMul"})
                          ) -> list[onnx.NodeProto]:
    """For each graph output, the first node of ``ops`` found walking back through :data:`TOWARD_OUTPUT` ops
    (along their non-constant input); each node once."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    found: list[onnx.NodeProto] = []
    for graph_output in model.graph.output:
        node = producer.get(graph_output.name)
        while node is not None and node.op_type not in ops and node.op_type in TOWARD_OUTPUT:
            node = next((producer[x] for x in node.input if x in producer and x not in inits), None)
        if node is not None and node.op_type in ops and all(node is not f for f in found):
            found.append(node)
    return found
