"""The threshold search and the learned decisions, on made-up exit outputs (seeded): the search
against a brute force over every setting, the floor always met, the oracle labels and weights of
the four cases, and a weighted logistic fit that learns what the weights say."""

from __future__ import annotations

import itertools

import pytest
import torch

from deepshrink.exits import (StageCosts, assess, assess_many, fit_gate, fit_gates, oracle_targets, search_thresholds,
                              simulate)
from deepshrink.exits.calibrate import calibrate, calibrate_policy
from deepshrink.exits.search import candidates, frontier, search_many

COSTS = StageCosts([30.0, 60.0, 100.0], [3.0, 4.0], decision=1.0)


def _outputs(n=400, seed=0):
    """Scores (2, N) that predict correctness: an exit is right more often where it is surer."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(2, n, generator=g, dtype=torch.float64)
    ok = torch.stack([torch.rand(n, generator=g) < 0.55 + 0.45 * scores[0],
                      torch.rand(n, generator=g) < 0.75 + 0.25 * scores[1],
                      torch.rand(n, generator=g) < 0.95])
    return scores, ok


def test_simulate_takes_the_first_exit_that_passes():
    scores = torch.tensor([[0.9, 0.2, 0.2, 0.9], [0.1, 0.8, 0.1, 0.9]])
    assert simulate(scores, [0.5, 0.5]).tolist() == [0, 1, 2, 0]
    assert simulate(scores, [None, 0.5]).tolist() == [2, 1, 2, 1]
    assert simulate(scores, [None, None]).tolist() == [2, 2, 2, 2]


def test_assess_many_agrees_with_assess():
    scores, ok = _outputs()
    rows = [[None, None], [0.3, None], [None, 0.6], [0.2, 0.9], [0.95, 0.05]]
    acc, cost = assess_many(scores, ok, COSTS, torch.tensor([[float("nan") if t is None else t for t in r]
                                                             for r in rows], dtype=torch.float64))
    for r, a, c in zip(rows, acc, cost):
        one = assess(scores, ok, COSTS, r)
        assert one.accuracy == pytest.approx(float(a)) and one.cost == pytest.approx(float(c))


@pytest.mark.parametrize("drop", [0.0, 0.02, 0.05, 0.2])
def test_search_finds_the_brute_force_optimum(drop):
    scores, ok = _outputs()
    floor = ok[-1].float().mean().item() - drop
    grid = 12
    best = None
    for combo in itertools.product(*candidates(scores, grid)):          # the oracle: every setting on the grid
        r = assess(scores, ok, COSTS, list(combo))
        if r.accuracy >= floor - 1e-12 and (best is None or r.cost < best.cost - 1e-9):
            best = r
    found = search_thresholds(scores, ok, COSTS, floor, grid=grid)
    assert found.accuracy >= floor - 1e-12
    assert found.cost == pytest.approx(best.cost)
    descent = search_thresholds(scores, ok, COSTS, floor, grid=grid, max_combos=1)   # coordinate descent
    assert descent.method == "coordinate descent" and descent.accuracy >= floor - 1e-12
    assert descent.cost >= found.cost - 1e-9


def test_a_floor_above_the_original_turns_every_exit_off():
    scores, ok = _outputs()
    r = search_thresholds(scores, ok, COSTS, floor=1.01)
    assert r.thresholds == [None, None] and r.cost == COSTS.full and r.shares == [0.0, 0.0, 1.0]


def test_the_curve_is_a_pareto_front():
    scores, ok = _outputs()
    orig = ok[-1].float().mean().item()
    curve = frontier(search_many(scores, ok, COSTS, [orig - d for d in (0, 0.01, 0.03, 0.1, 0.3)], grid=20))
    costs, accs = [r.cost for r in curve], [r.accuracy for r in curve]
    assert costs == sorted(costs) and accs == sorted(accs) and len(curve) >= 2


def test_oracle_labels_and_weights_of_the_four_cases():
    here = torch.tensor([True, True, False, False])
    later = torch.tensor([True, False, True, False])
    labels, weights = oracle_targets(here, later, 0.3, torch.full((4,), 1.0), lam=0.5)   # going on costs 0.35
    assert labels.tolist() == [1, 1, 0, 1]            # right here: leave; wrong here, right later: go on; both wrong: leave
    assert weights.tolist() == pytest.approx([0.35, 1.35, 0.65, 0.35])
    labels, _ = oracle_targets(here, later, 0.3, torch.full((4,), 1.0), lam=2.0)          # going on costs 1.4 > 1 error
    assert labels.tolist() == [1, 1, 1, 1]


def test_a_weighted_logistic_fit_follows_the_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.3 * torch.randn(600, generator=g, dtype=torch.float64) > 0).double()
    gate = fit_gate(x, y, torch.ones(600))
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    z = ((x - t(gate.mean)) / t(gate.std)) @ t(gate.weight) + gate.bias
    assert ((z > 0).double() == y).double().mean() > 0.85
    # weight only the samples with x1 > 0 and label them by x1: the fit follows x1, not x0
    y2 = (x[:, 1] > 0).double()
    gate2 = fit_gate(x, y2, (x[:, 0] > 0).double())
    assert abs(gate2.weight[1]) > 3 * abs(gate2.weight[0])


def test_learned_gates_and_the_calibration_of_every_policy():
    g = torch.Generator().manual_seed(0)
    n, c = 500, 4
    y = torch.randint(0, c, (n,), generator=g)
    logits = []
    for noise in (2.5, 1.5, 0.8):                    # later exits are better
        z = torch.randn(n, c, generator=g) * noise
        z[torch.arange(n), y] += 2.0
        logits.append(z)
    gates = fit_gates(logits, y, COSTS, lam=0.5)
    assert len(gates) == 2 and all(len(gt.weight) == 4 for gt in gates)
    best, every = calibrate(logits, y, COSTS, max_drop=1.0, lambdas=(0.5, 2.0), grid=20)
    original = (logits[-1].argmax(1) == y).float().mean().item()
    for choice in every.values():
        assert choice.result.accuracy >= original - 0.01 - 1e-12
        assert choice.result.cost <= COSTS.full
    assert best.result.cost == min(ch.result.cost for ch in every.values())
    assert calibrate_policy("learned", logits, y, COSTS, 1.0, lambdas=(0.5,), grid=20).lam == 0.5
