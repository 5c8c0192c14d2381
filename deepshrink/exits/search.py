"""Threshold search: the thresholds that meet an accuracy floor at the lowest expected cost.

Inputs are what the exits said on the validation split, computed once: ``scores`` (E, N), each
exit's policy score per sample, and ``correct`` (E + 1, N), whether each exit (the model's own
output last) got the sample right. A sample leaves at the first enabled exit ``k`` with
``scores[k] >= t_k`` (:func:`simulate`); accuracy and the expected cost (:mod:`.cost`) follow.

The search (pure, seeded by nothing) takes each exit's candidate thresholds from the quantiles of
its own scores (``grid`` of them, plus "off": the head never runs), and

* tries every combination when there are at most ``max_combos`` (exact on that grid);
* otherwise runs coordinate descent from "all off" (the original model): each exit in turn takes
  the candidate of lowest cost that keeps the floor, until a full pass changes nothing.

Among the settings that meet the floor the cheapest wins, ties broken by accuracy. "All off"
always meets a floor at or below the original's accuracy, so there is always an answer; when
no exit saves anything it is the answer, and the report says so. :func:`search_many` answers
several floors in one pass, and :func:`frontier` turns those answers into the accuracy vs cost
curve.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .cost import StageCosts, exit_shares, expected_cost, path_costs

__all__ = ["SearchResult", "simulate", "assess", "assess_many", "candidates", "search_thresholds", "search_many",
           "frontier"]


@dataclass
class SearchResult:
    thresholds: list[float | None]
    accuracy: float
    cost: float
    shares: list[float]
    evaluated: int = 0                       # settings tried
    method: str = "exhaustive"               # or "coordinate descent"
    floor: float = 0.0

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds, "accuracy": self.accuracy, "cost": self.cost,
                "shares": self.shares, "evaluated": self.evaluated, "method": self.method, "floor": self.floor}


def simulate(scores: torch.Tensor, thresholds: list[float | None]) -> torch.Tensor:
    """(N,) exit index per sample: the first exit whose threshold is set and reached, else E."""
    e, n = scores.shape
    out = torch.full((n,), e, dtype=torch.long)
    for k in reversed(range(e)):              # the earliest passing exit wins
        t = thresholds[k]
        if t is not None:
            out[scores[k] >= t] = k
    return out


def assess(scores: torch.Tensor, correct: torch.Tensor, costs: StageCosts,
           thresholds: list[float | None]) -> SearchResult:
    """Accuracy, expected cost and exit shares of one setting."""
    exits = simulate(scores, thresholds)
    acc = correct.gather(0, exits.unsqueeze(0)).float().mean().item()
    shares = exit_shares(exits, scores.shape[0] + 1)
    paths = path_costs(costs, [t is not None for t in thresholds])
    return SearchResult(list(thresholds), acc, expected_cost(shares, paths), shares, 1)


def candidates(scores: torch.Tensor, grid: int) -> list[list[float | None]]:
    """Per exit: None (off), then ``grid`` thresholds at evenly spaced quantiles of its scores."""
    qs = torch.linspace(0, 1, grid + 1, dtype=torch.float64)[:-1]   # quantile q: a share 1 - q of samples pass
    out = []
    for row in scores.double():
        vals = torch.quantile(row, qs).unique().tolist()
        out.append([None] + sorted(set(vals)))
    return out


def _better(a: SearchResult, b: SearchResult | None) -> bool:
    return b is None or a.cost < b.cost - 1e-9 or (abs(a.cost - b.cost) <= 1e-9 and a.accuracy > b.accuracy)


def assess_many(scores: torch.Tensor, correct: torch.Tensor, costs: StageCosts,
                table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy (M,), expected cost (M,)) of M settings at once; ``table`` (M, E), NaN for "off"."""
    m, e = table.shape
    n = scores.shape[1]
    on = ~torch.isnan(table)                                                  # (M, E)
    exits = torch.full((m, n), e, dtype=torch.long)                           # (M, N); the model's output by default
    for k in reversed(range(e)):                                              # the earliest passing exit wins
        exits = torch.where(scores[k].unsqueeze(0) >= table[:, k:k + 1], k, exits)   # NaN (off) never passes
    acc = correct.gather(0, exits).float().mean(1) if m else torch.empty(0)
    shares = torch.zeros(m, e + 1, dtype=torch.float64).scatter_add_(
        1, exits, torch.ones(m, n, dtype=torch.float64)) / n                  # (M, E + 1)
    step = on.double() * (torch.tensor(costs.heads, dtype=torch.float64) + costs.decision)    # (M, E)
    heads = step.cumsum(1)
    paths = torch.cat([torch.tensor(costs.backbone[:-1], dtype=torch.float64) + heads,
                       costs.backbone[-1] + heads[:, -1:]], 1)                  # (M, E + 1)
    return acc.double(), (shares * paths).sum(1)


def _table(rows: list[list[float | None]]) -> torch.Tensor:
    return torch.tensor([[float("nan") if t is None else t for t in r] for r in rows], dtype=torch.float64)


def _pick(rows, acc, cost, floor, best: SearchResult | None, scores, correct, costs):
    """The best of ``rows`` meeting the floor, if better than ``best``."""
    ok = acc >= floor - 1e-12
    if not bool(ok.any()):
        return best
    key = torch.where(ok, cost - 1e-12 * acc, torch.full_like(cost, float("inf")))
    i = int(key.argmin())
    r = assess(scores, correct, costs, list(rows[i]))
    return r if _better(r, best) else best


def _exhaustive(scores, correct, costs, cands, floors, chunk: int = 2000) -> list[SearchResult]:
    best: list[SearchResult | None] = [None] * len(floors)
    tried = 0
    combos = itertools.product(*cands)
    while True:
        rows = list(itertools.islice(combos, chunk))
        if not rows:
            break
        acc, cost = assess_many(scores, correct, costs, _table(rows))
        best = [_pick(rows, acc, cost, f, b, scores, correct, costs) for f, b in zip(floors, best)]
        tried += len(rows)
    for b in best:
        b.evaluated = tried
    return best


def _descent(scores, correct, costs, cands, floor, passes: int = 20) -> SearchResult:
    current = [None] * scores.shape[0]
    best = assess(scores, correct, costs, current)
    tried = 1
    for _ in range(passes):
        before = best
        for k in range(len(current)):
            rows = [current[:k] + [t] + current[k + 1:] for t in cands[k]]
            acc, cost = assess_many(scores, correct, costs, _table(rows))
            tried += len(rows)
            best = _pick(rows, acc, cost, floor, best, scores, correct, costs)
            current = list(best.thresholds)
        if best is before:
            break
    best.evaluated, best.method = tried, "coordinate descent"
    return best


def search_many(scores: torch.Tensor, correct: torch.Tensor, costs: StageCosts, floors: list[float],
                grid: int = 100, max_combos: int = 50_000) -> list[SearchResult]:
    """:func:`search_thresholds` for several floors at once (one pass over the settings when exhaustive)."""
    cands = candidates(scores, grid)
    combos = 1
    for c in cands:
        combos *= len(c)
    off = assess(scores, correct, costs, [None] * scores.shape[0])
    out: list[SearchResult | None] = [None] * len(floors)
    todo = []
    for i, floor in enumerate(floors):
        if off.accuracy < floor - 1e-12:          # the floor is above the original: nothing to save
            out[i] = SearchResult(off.thresholds, off.accuracy, off.cost, off.shares, 1, "none", floor)
        else:
            todo.append(i)
    if todo and combos <= max_combos:
        for i, r in zip(todo, _exhaustive(scores, correct, costs, cands, [floors[i] for i in todo])):
            out[i] = r
    else:
        for i in todo:
            out[i] = _descent(scores, correct, costs, cands, floors[i])
    for i, r in enumerate(out):
        r.floor = floors[i]
    return out


def search_thresholds(scores: torch.Tensor, correct: torch.Tensor, costs: StageCosts, floor: float,
                      grid: int = 100, max_combos: int = 50_000) -> SearchResult:
    """The cheapest thresholds with accuracy >= ``floor`` (a fraction) on these samples."""
    return search_many(scores, correct, costs, [floor], grid, max_combos)[0]


def frontier(results: list[SearchResult]) -> list[SearchResult]:
    """The accuracy vs expected-cost curve from searches at several floors: the settings no cheaper
    one matches in accuracy (the Pareto front), cheapest first."""
    out: list[SearchResult] = []
    for r in sorted(results, key=lambda r: (r.cost, -r.accuracy)):
        if not out or r.accuracy > out[-1].accuracy:
            out.append(r)
    return out
