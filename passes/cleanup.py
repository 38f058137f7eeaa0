"""Remove nodes and initializers that no graph output depends on, and re-sort topologically.

Graph inputs are kept even when unused: the model's interface never changes.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.pass_infra import GraphPass, PassResult


class Cleanup(GraphPass):
    name = "cleanup"

    def call(self, graph: gs.Graph) -> PassResult:
        before = (len(graph.nodes), len(graph.tensors()))
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult(graph, (len(graph.nodes), len(graph.tensors())) != before)
