"""Predict a pruned model's latency from its latency table, without rewriting it.

Rule: each profiled layer's latency is its full latency times its output-axis curve at the kept output count
times its input-axis curve at the kept input count (each relative to full; interpolated between grid counts),
less the session call its one-layer graph paid where it was timed by wall time (:meth:`LatencyTable.net_ms`).
The model's latency is ``a * (sum of its layers) + b``, fitted on whole models measured by ``profile`` at a few
uniform prunings (:meth:`LatencyTable.fit`): layers timed alone miss what the graph adds and shares (the ops
between layers, layout changes, fused activations, one session overhead). A group's *steps* are the
grid counts (its grid: :mod:`onnxprune.latency.blocking`) that are faster than every larger count (the others
are dominated: a plan never keeps one).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from onnxprune.channels.analysis import ChannelAnalysis, ChannelGroup
from onnxprune.latency.blocking import group_multiples
from onnxprune.latency.table import (
    LatencyTable,
    LatencyTableError,
    LayerLatency,
    channel_grid,
)


def _roots(analysis: ChannelAnalysis, node: str, tensor: str, channels: int) -> np.ndarray | None:
    """The element roots of ``tensor``'s channels (None: not tracked), checked against the table's count."""
    layout = analysis.layouts.get(tensor)
    if layout is None:
        return None
    roots = analysis.roots[layout.elems]
    if roots.shape[0] != channels:
        raise LatencyTableError(f"the latency table does not match this model: {node!r} has {roots.shape[0]} "
                                f"channels here, {channels} in the table (profiled at other input shapes?)")
    return roots


class LatencyModel:
    """Predicted milliseconds of ``analysis``'s graph after removing units (see the module doc)."""

    def __init__(self, analysis: ChannelAnalysis, table: LatencyTable) -> None:
        self.table = table
        by_node = table.by_node()
        nodes = {(n.name or n.outputs[0].name): n for n in analysis.graph.nodes if n.outputs}
        missing = sorted(set(by_node) - set(nodes))
        if missing:
            raise LatencyTableError(f"the latency table was profiled on another model: layer {missing[0]!r} is not in "
                                    f"this one ({len(missing)} missing)")
        self.layers: list[tuple[LayerLatency, np.ndarray | None, np.ndarray | None]] = []
        depthwise = {id(n) for n in analysis.depthwise}
        for name, layer in by_node.items():
            node = nodes[name]
            in_roots = None if id(node) in depthwise or layer.depthwise else \
                _roots(analysis, name, node.inputs[0].name, layer.in_channels)
            self.layers.append((layer, in_roots, _roots(analysis, name, node.outputs[0].name, layer.out_channels)))
        self.multiples = group_multiples(analysis, table.multiple, table.unblocked_multiple or table.multiple)
        self.a, self.b = table.fit()
        self.full_ms = table.model_ms
        self._roots = len(analysis.roots)
        self._keep_order: dict[str, np.ndarray] = {}

    def layers_ms(self, removed: np.ndarray) -> float:
        """Sum of the profiled layers' net latencies with ``removed`` units taken out (uncalibrated)."""
        total = 0.0
        for layer, in_roots, out_roots in self.layers:
            kept_out = None if out_roots is None else layer.out_channels * (1.0 - removed[out_roots].mean())
            kept_in = None if in_roots is None else layer.in_channels * (1.0 - removed[in_roots].mean())
            total += self.table.net_ms(layer.full_ms * layer.scale(kept_in, kept_out))
        return total

    def predict(self, removed: np.ndarray) -> float:
        """Milliseconds with the units in ``removed`` (a mask over the analysis's roots) taken out."""
        return self.a * self.layers_ms(removed) + self.b

    def with_scores(self, scores: dict[str, np.ndarray]) -> LatencyModel:
        """This model choosing the units a count keeps as the plan will: the highest-scoring (ties: the first).
        It matters where a layer reads only some of a group's units (zero-padded shortcuts, Concat)."""
        other = copy.copy(self)
        other._keep_order = {gid: np.argsort(-np.asarray(s), kind="stable") for gid, s in scores.items()}
        return other

    def _kept_units(self, group: ChannelGroup, kept: int) -> np.ndarray:
        order = self._keep_order.get(group.id)
        return group.units[order[kept:]] if order is not None else group.units[kept:]

    def removed_for(self, counts: dict[str, int], groups: dict[str, ChannelGroup]) -> np.ndarray:
        """A removal mask keeping ``counts[g]`` units of each group (see :meth:`with_scores` for which)."""
        removed = np.zeros(self._roots, dtype=bool)
        for gid, kept in counts.items():
            removed[self._kept_units(groups[gid], kept)] = True
        return removed

    def steps(self, group: ChannelGroup, multiple: int = 1, floor: int = 1) -> tuple[int, ...]:
        """The group's non-dominated counts, ascending (the full count always), with every other group whole:
        grid counts (multiples of ``multiple``, at least ``floor``) each strictly faster than all larger ones."""
        grid = channel_grid(group.channels, self.multiples.get(group.id, self.table.multiple))
        counts = [c for c in grid if c % multiple == 0 and c >= floor]
        if group.channels not in counts:
            counts.append(group.channels)
        base = np.zeros(self._roots, dtype=bool)
        chosen: list[int] = []
        best = math.inf
        for c in sorted(counts, reverse=True):
            removed = base.copy()
            removed[self._kept_units(group, c)] = True
            ms = self.layers_ms(removed)
            if c == group.channels or ms < best:
                chosen.append(c)
                best = ms
        return tuple(sorted(chosen))
