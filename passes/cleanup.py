"""Remove nodes that no graph output depends on, and restore topological order if an edit broke it.

Graph inputs are kept even when unused: the model's interface never changes. Initializers no node reads are
not written on export, so they need no removal here.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.pass_infra import GraphPass, PassResult


def is_topologically_sorted(graph: gs.Graph) -> bool:
    produced = {id(t) for t in graph.inputs}
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Variable) and t.inputs and id(t) not in produced:
                return False
        produced.update(id(t) for t in node.outputs)
    return True


class Cleanup(GraphPass):
    name = "cleanup"

    def call(self, graph: gs.Graph) -> PassResult:
        before = len(graph.nodes)
        graph.cleanup(remove_unused_graph_inputs=False)
        resorted = not is_topologically_sorted(graph)
        if resorted:
            graph.toposort()
        return PassResult(graph, resorted or len(graph.nodes) != before)
