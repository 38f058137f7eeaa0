"""Block-aligned unit order: a layer that reads part of a group (zero-padded shortcut, Split) keeps a multiple
of the block of it, and never none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxprune
from onnxprune.channels import analyze
from onnxprune.channels.readers import Segments, aligned_group_scores, reader_segments
from onnxprune.importance import Criterion, score_groups
from onnxprune.plan import PlanOptions, make_plan
from onnxprune.pruning import prune
from onnxprune.verify import InputSpec

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"

# a residual stream as CIFAR ResNet's option A makes it: stage 1 reads units 0-15, stage 2 reads 0-31
NESTED = Segments((np.arange(0, 16), np.arange(16, 32), np.arange(32, 64)),
                  (frozenset({0}), frozenset({0, 1})))


def kept_order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


@pytest.mark.parametrize("seed", range(5))
def test_counts_on_the_block_keep_whole_chunks_in_every_segment(seed):
    scores = np.random.default_rng(seed).random(64)
    result = aligned_group_scores(NESTED, scores, 16)
    assert result is not None
    aligned, floor = result
    assert floor == 16   # segment 0 is read by both partial readers: its best chunk covers them
    for k in (16, 32, 48):
        keep = set(kept_order(aligned)[:k].tolist())
        per_segment = [len(keep & set(u.tolist())) for u in NESTED.units]
        assert all(c % 16 == 0 for c in per_segment), per_segment
        assert per_segment[0] == 16   # stage 1 reads segment 0 only: it is never left without channels
    # chunks are a segment's highest-scoring units, and the scores a chunk removes sum as before
    low = kept_order(aligned)[48:]
    assert np.isclose(aligned[low].sum(), scores[low].sum())
    assert len({round(float(v), 12) for v in aligned}) == 4


def test_ties_and_zero_scores_still_keep_whole_chunks():
    result = aligned_group_scores(NESTED, np.zeros(64), 16)
    assert result is not None
    aligned, _ = result
    for k in (16, 32, 48):
        keep = set(kept_order(aligned)[:k].tolist())
        assert [len(keep & set(u.tolist())) % 16 for u in NESTED.units] == [0, 0, 0]


def test_groups_that_cannot_be_aligned_are_only_protected():
    halves = Segments((np.arange(0, 12), np.arange(12, 24)), (frozenset({0}), frozenset({1})))   # ShuffleNet's
    assert aligned_group_scores(halves, np.arange(24.0), 16) is None
    # ... but still protected a unit at a time: one unit of each half ranks first, and a plan keeps both
    aligned, floor = aligned_group_scores(halves, np.arange(24.0), 1)
    assert floor == 2 and {int(u) // 12 for u in np.argsort(-aligned, kind="stable")[:2]} == {0, 1}
    whole = Segments((np.arange(32),), ())
    assert aligned_group_scores(whole, np.arange(32.0), 16) is None


@pytest.fixture(scope="module")
def resnet56():
    model = onnxprune.fold(onnxprune.load(DIGITS / "resnet56.onnx")).model
    return model, analyze(model)


def test_the_zero_padded_stream_is_read_in_parts(resnet56):
    _, analysis = resnet56
    parts = {g.id: reader_segments(analysis, g) for g in analysis.prunable}
    partial = {gid: s for gid, s in parts.items() if s.readers}
    assert len(partial) == 1   # the residual stream: 16 + 16 + 32 units, read 16 and 32 at a time
    (segments,) = partial.values()
    assert sorted(len(u) for u in segments.units) == [16, 16, 32]
    assert sorted(sum(len(segments.units[s]) for s in r) for r in segments.readers) == [16, 32]


def reader_counts(analysis, plan) -> list[int]:
    """Kept channels of every layer input that reads part of a group."""
    removed = plan.removed_roots(analysis)
    counts = []
    for group in analysis.prunable:
        units = set(group.units.tolist())
        for tensor in dict.fromkeys(t for _, t in analysis.consumers):
            layout = analysis.layouts.get(tensor)
            if layout is None:
                continue
            roots = [int(r) for r in analysis.roots[layout.elems] if int(r) in units]
            if 0 < len(roots) < group.channels:
                counts.append(sum(1 for r in roots if not removed[r]))
    return counts


@pytest.mark.parametrize("ratio", [0.3, 0.6, 0.8])
def test_round_to_keeps_every_partial_reader_on_the_multiple(resnet56, ratio):
    model, analysis = resnet56
    scores = score_groups(analysis, Criterion.L1, 0, None, model)
    unaligned = make_plan(analysis, scores, PlanOptions(ratio=ratio, round_to=1))
    plan = make_plan(analysis, scores, PlanOptions(ratio=ratio, round_to=16))
    counts = reader_counts(analysis, plan)
    assert counts and all(c > 0 and c % 16 == 0 for c in counts), counts
    # without the multiple, the highest-scoring units fall anywhere (what the alignment is for)
    assert any(c % 16 for c in reader_counts(analysis, unaligned))


def test_an_aligned_plan_rewrites_to_a_model_that_matches_the_masked_original(resnet56):
    model, _ = resnet56
    result = prune(model, PlanOptions(ratio=0.6, round_to=16), verify=True, spec=InputSpec(batch=2))
    assert result.report.max_abs_diff is not None
    assert result.report.flops_after < result.report.flops_before


def split_net():
    """conv1 (3->32) -> Split into halves -> a conv on each -> Concat -> head: each half read by another layer."""
    from onnx import helper

    from tests.graphs import init, model, rand

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Split", ["r1", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Conv", ["a", "wa"], ["ca"], name="conva", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "wb"], ["cb"], name="convb", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["ca", "cb"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "wh"], ["y"], name="head")]
    inits = [init("w1", rand(32, 3, 3, 3)), init("sizes", np.array([16, 16], dtype=np.int64)),
             init("wa", rand(16, 16, 3, 3)), init("wb", rand(16, 16, 3, 3)), init("wh", rand(4, 32, 1, 1))]
    return model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_a_split_group_keeps_a_multiple_in_each_half(ratio):
    m = split_net()
    analysis = analyze(m)
    split = next(g for g in analysis.prunable if g.sources == ("conv1",))
    segments = reader_segments(analysis, split)
    assert sorted(len(u) for u in segments.units) == [16, 16] and len(segments.readers) == 2
    scores = score_groups(analysis, Criterion.L1, 0, None, m)
    plan = make_plan(analysis, scores, PlanOptions(ratio=ratio, round_to=8))
    counts = reader_counts(analysis, plan)
    assert len(counts) == 2
    assert all(c in (8, 16) for c in counts), counts   # each half: a multiple of 8, never none (was [8, 0])
    result = prune(m, plan=plan, verify=True, spec=InputSpec(batch=2))
    assert result.report.max_abs_diff is not None


def test_without_a_multiple_every_partial_reader_still_keeps_a_unit():
    m = split_net()
    analysis = analyze(m)
    scores = score_groups(analysis, Criterion.L1, 0, None, m)
    split = next(g for g in analysis.prunable if g.sources == ("conv1",))
    lopsided = {**scores, split.id: np.r_[np.arange(16.0) + 100, np.arange(16.0)]}   # first half scores higher
    plan = make_plan(analysis, lopsided, PlanOptions(ratio=0.95, round_to=1))
    assert all(c >= 1 for c in reader_counts(analysis, plan))
