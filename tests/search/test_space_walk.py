"""The search space and its two loops (deepshrink/search/space.py, walk.py) against brute force."""

import itertools

import pytest

from deepshrink.search.space import (BITS_STEPS, SPARSITY_STEPS, LayerChoice, compress_fields, describe, moves,
                                     start_point)
from deepshrink.search.walk import furthest_feasible, greedy_path


def test_moves_change_one_layer_by_one_notch():
    p = start_point(["a.weight", "b.weight"])
    got = moves(p, prunable={"a.weight"})
    # a: sparsity + two bit kinds; b (not prunable): two bit kinds
    assert [(layer, what) for layer, what, _ in got] == [
        ("a.weight", "sparsity 0.5"), ("a.weight", "bits 7 kmeans"), ("a.weight", "bits 7 linear"),
        ("b.weight", "bits 7 kmeans"), ("b.weight", "bits 7 linear")]
    for layer, _, new in got:
        changed = [n for (n, c), (_, c0) in zip(new, p) if c != c0]
        assert changed == [layer]
    last = (("a.weight", LayerChoice(SPARSITY_STEPS[-1], BITS_STEPS[-1], "linear")),)
    assert moves(last, {"a.weight"}) == []


def test_compress_fields_name_layers_and_leave_dense_layers_out_of_the_map():
    p = (("fc1.weight", LayerChoice(0.9, 3, "linear")), ("fc2.weight", LayerChoice(0.0, 6, "kmeans")))
    assert compress_fields(p) == {"layer_sparsity": {"fc1": 0.9}, "bits": {"fc1": 3, "fc2": 6},
                                  "linear_codebooks": ("fc1",)}
    assert describe(p) == "fc1 90% 3b linear, fc2 0% 6b"


def test_greedy_path_takes_the_cheapest_move_per_byte_saved():
    # a toy: bytes = sum over layers of (1 - s) * bits * size; score loses cost[layer] per notch taken
    size = {"a": 100, "b": 10}
    cost = {"a": 0.001, "b": 0.05}

    def nbytes(p):
        return int(sum((1 - c.sparsity) * c.bits * size[n] for n, c in p))

    def notches(p):
        return {n: SPARSITY_STEPS.index(c.sparsity) + BITS_STEPS.index(c.bits) for n, c in p}

    def score(p):
        return 1.0 - sum(cost[n] * k for n, k in notches(p).items())

    path = greedy_path(start_point(["a", "b"]), {"a", "b"}, nbytes, score, stop_drop=0.02)
    assert path[0].move == "start" and all(x.bytes > y.bytes for x, y in zip(path, path[1:]))
    # brute force the first step: the move minimising lost score per byte saved
    first = min(moves(path[0].point, {"a", "b"}),
                key=lambda m: (max(score(path[0].point) - score(m[2]), 0) / (nbytes(path[0].point) - nbytes(m[2])),
                               -(nbytes(path[0].point) - nbytes(m[2]))))
    assert path[1].point == first[2]
    assert all(x.move.startswith("a ") for x in path[1:4])       # the cheap, big layer goes first
    assert path[-2].proxy >= 1.0 - 0.02 - 1e-12                   # stopped once past the drop


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_furthest_feasible_finds_the_boundary_of_a_monotone_predicate(n):
    for k, guess, budget in itertools.product(range(-1, n), range(n), (2, 6, 30)):
        calls = []
        got = furthest_feasible(n, lambda i: calls.append(i) or i <= k, guess, budget)
        assert len(calls) <= budget and len(set(calls)) == len(calls)
        if got is not None:
            assert got <= k and got in calls                      # never claims an infeasible index
        if budget >= 30:
            assert got == (k if k >= 0 else None)                 # enough tries: the exact boundary


def test_a_layer_pruning_emptied_reads_as_the_highest_step():
    """compress's defaults prune globally and may empty a small layer; the walk starts from that
    model, and a sparsity map must stay below 1."""
    import torch
    from torch import nn
    from deepshrink.pipelines.search import _point_of
    from deepshrink.search.space import SPARSITY_STEPS, compress_fields
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.zero_()
    point = _point_of(model, ["0.weight", "2.weight"], {"0": 3})
    assert dict(point)["0.weight"].sparsity == SPARSITY_STEPS[-1] and dict(point)["0.weight"].bits == 3
    assert all(0 <= v < 1 for v in compress_fields(point)["layer_sparsity"].values())
