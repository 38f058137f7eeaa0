"""Connection (weight) pruning by magnitude (Han et al., NIPS 2015): small weights of Conv, Gemm and MatMul
layers are set to zero; the graph's structure does not change.

Rule, per layer (a constant float weight at input 1), in order of precedence:

- ``sparsity_for`` glob -> fraction: that fraction of the layer's weights, smallest |w| first;
- ``global_sparsity``: one magnitude threshold over every eligible weight, set so that ``sparsity`` of them go;
- ``sparsity``: that fraction of each layer's weights;
- ``quality``: |w| < quality x std(w) (the paper's threshold).

Layers are chosen by ``include`` / ``exclude`` globs on the node name. A weight shared by several layers is
pruned once, and only when every layer reading it is eligible (otherwise it is left and reported). Ties at
the threshold are broken by position, so the zeroed fraction is exact. Unstructured zeros do not make ONNX
Runtime faster; they pay off on disk once compressed (``onnxprune compress``).
"""

from __future__ import annotations

import dataclasses

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.errors import UsageError
from onnxprune.graph import is_default_domain
from onnxprune.pass_infra import Finding, GraphPass, PassResult

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class ConnectionPruning:
    quality: float | None = None
    sparsity: float | None = None
    global_sparsity: bool = False
    sparsity_for: tuple[tuple[str, float], ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, value in (("--sparsity", self.sparsity), *(("--sparsity-for " + g, s) for g, s in self.sparsity_for)):
            if value is not None and not 0.0 <= value < 1.0:
                raise UsageError(f"{name} {value} must be in [0, 1)")
        if self.quality is not None and self.quality < 0:
            raise UsageError(f"--quality {self.quality} must be >= 0")
        if self.global_sparsity and self.sparsity is None:
            raise UsageError("--global needs --sparsity")

    @property
    def active(self) -> bool:
        return self.quality is not None or self.sparsity is not None or bool(self.sparsity_for)


def scaled(options: ConnectionPruning, factor: float) -> ConnectionPruning:
    """``options`` with every sparsity (and the quality threshold) multiplied by ``factor`` in [0, 1]."""
    return dataclasses.replace(
        options, quality=None if options.quality is None else options.quality * factor,
        sparsity=None if options.sparsity is None else options.sparsity * factor,
        sparsity_for=tuple((glob, s * factor) for glob, s in options.sparsity_for))


def eligible_weights(graph: gs.Graph, options: ConnectionPruning) -> tuple[dict[str, tuple[gs.Constant, list[gs.Node]]],
                                                                          list[Finding]]:
    """Weights (by tensor name) of the layers chosen by ``options``, with the layers that read them."""
    readers: dict[str, tuple[gs.Constant, list[gs.Node]]] = {}
    for node in graph.nodes:
        if node.op in PRUNABLE_OPS and is_default_domain(node) and len(node.inputs) > 1 \
                and isinstance(node.inputs[1], gs.Constant) and node.inputs[1].values.dtype.kind == "f":
            readers.setdefault(node.inputs[1].name, (node.inputs[1], []))[1].append(node)
    chosen: dict[str, tuple[gs.Constant, list[gs.Node]]] = {}
    skipped: list[Finding] = []

    def wanted(node: gs.Node) -> bool:
        name = node.name or node.outputs[0].name
        return (not options.include or any(fnmatch.fnmatchcase(name, p) for p in options.include)) and \
            not any(fnmatch.fnmatchcase(name, p) for p in options.exclude)

    all_users: dict[str, int] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                all_users[t.name] = all_users.get(t.name, 0) + 1
    for name, (const, nodes) in readers.items():
        if not all(wanted(n) for n in nodes):
            continue
        if all_users.get(name, 0) != len(nodes):
            skipped.append(Finding(nodes[0].name, nodes[0].op, False,
                                   f"weight {name!r} is also read by a layer that is not pruned"))
            continue
        chosen[name] = (const, nodes)
    return chosen, skipped


def _sparsity_for(options: ConnectionPruning, nodes: list[gs.Node]) -> float | None:
    for pattern, value in options.sparsity_for:
        if any(fnmatch.fnmatchcase(n.name or n.outputs[0].name, pattern) for n in nodes):
            return value
    return None


def _keep_largest(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the round(sparsity x size) smallest-magnitude entries (stable: lower positions go first on ties)."""
    flat = w.reshape(-1)
    n = int(round(sparsity * flat.size))
    out = flat.copy()
    if n > 0:
        out[np.argsort(np.abs(flat), kind="stable")[:n]] = 0
    return out.reshape(w.shape)


class PruneConnections(GraphPass):
    name = "prune-connections"

    def __init__(self, options: ConnectionPruning) -> None:
        self.options = options

    def call(self, graph: gs.Graph) -> PassResult:
        chosen, findings = eligible_weights(graph, self.options)
        o = self.options
        global_threshold = None
        if o.global_sparsity and o.sparsity:
            rest = [c.values for name, (c, nodes) in chosen.items() if _sparsity_for(o, nodes) is None]
            if rest:
                mags = np.sort(np.concatenate([np.abs(v).reshape(-1) for v in rest]))
                global_threshold = mags[min(int(round(o.sparsity * mags.size)), mags.size - 1)]
        modified = False
        for name, (const, nodes) in chosen.items():
            w = np.asarray(const.values)
            per_layer = _sparsity_for(o, nodes)
            if per_layer is not None:
                new = _keep_largest(w, per_layer)
            elif global_threshold is not None:
                new = np.where(np.abs(w) < global_threshold, 0, w).astype(w.dtype)
            elif o.sparsity is not None:
                new = _keep_largest(w, o.sparsity)
            elif o.quality is not None:
                new = np.where(np.abs(w) < o.quality * float(w.std()), 0, w).astype(w.dtype)
            else:
                continue
            zeros = int((new == 0).sum())
            if zeros != int((w == 0).sum()):
                const.values = np.ascontiguousarray(new)
                modified = True
            findings.append(Finding(nodes[0].name, nodes[0].op, True,
                                    f"{zeros / max(w.size, 1):.1%} of {w.size} weights are zero"))
        return PassResult(graph, modified, tuple(findings))
