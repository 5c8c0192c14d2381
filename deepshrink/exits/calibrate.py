"""Choosing a policy and its thresholds on held-out samples (the validation split).

Every exit's logits are computed once (:func:`collect_exit_logits`, one full pass per batch);
everything after is arithmetic on them. For each policy, the threshold search
(:func:`.search.search_thresholds`) finds the cheapest setting whose accuracy is at least the
original model's minus ``max_drop`` percentage points; the learned policy first fits its gates
(:func:`.gates.fit_gates`) for each ``lambda`` in ``lambdas`` and keeps the cheapest. The policy
whose setting is cheapest wins (ties: the more accurate). :func:`.search.frontier` gives each
policy's accuracy vs cost curve for the plot and the report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..exit_heads import POLICY_NAMES, Gate
from .cost import StageCosts
from .gates import fit_gates
from .model import EarlyExitModel
from .policies import decision_macs, exit_score
from .search import SearchResult, frontier, search_many

__all__ = ["PolicyChoice", "CURVE_DROPS", "LAMBDAS", "collect_exit_logits", "policy_scores", "costs_for_policy",
           "calibrate_policy", "calibrate"]

CURVE_DROPS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0)   # pp below the original
LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0)      # the learned policy's price of a whole model's cost, in errors


@dataclass
class PolicyChoice:
    policy: str
    result: SearchResult                           # the chosen setting, on the samples it was chosen on
    gates: list[Gate | None] = field(default_factory=list)
    lam: float | None = None
    curve: list[SearchResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"policy": self.policy, **self.result.to_dict(), "lambda": self.lam,
                "curve": [{"cost": r.cost, "accuracy": r.accuracy, "floor": r.floor} for r in self.curve]}


@torch.no_grad()
def collect_exit_logits(ee: EarlyExitModel, x: torch.Tensor, batch_size: int = 500, progress: bool = False,
                        desc: str = "exit outputs") -> list[torch.Tensor]:
    """Every exit's logits (E heads, then the model's output) for all of ``x``, in eval mode."""
    was = ee.training
    ee.eval()
    parts: list[list[torch.Tensor]] = []
    bar = tqdm(total=len(x), desc=desc, unit="img", disable=not progress, leave=False, file=sys.stderr)
    try:
        for lo in range(0, len(x), batch_size):
            outs = ee.exit_logits(x[lo:lo + batch_size])
            if not parts:
                parts = [[] for _ in outs]
            for p, o in zip(parts, outs):
                p.append(o.float())
            bar.update(min(batch_size, len(x) - lo))
    finally:
        bar.close()
        ee.train(was)
    return [torch.cat(p) for p in parts]


def policy_scores(policy: str, exit_logits: list[torch.Tensor], gates: list[Gate | None] | None = None) -> torch.Tensor:
    """(E, N): each early exit's score under ``policy`` (the model's own output takes no decision)."""
    heads = exit_logits[:-1]
    return torch.stack([exit_score(policy, z, gates[k] if gates else None) for k, z in enumerate(heads)]).double()


def costs_for_policy(policy: str, costs: StageCosts) -> StageCosts:
    """``costs`` with ``policy``'s decision cost per exit (MACs: the learned gate's dot product)."""
    return replace(costs, decision=float(decision_macs(policy))) if costs.unit == "MACs" else costs


def calibrate_policy(policy: str, exit_logits: list[torch.Tensor], labels: torch.Tensor, costs: StageCosts,
                     max_drop: float, lambdas=LAMBDAS, grid: int = 100, curve: bool = True) -> PolicyChoice:
    """The cheapest setting of ``policy`` within ``max_drop`` pp of the original's accuracy on these samples."""
    if policy not in POLICY_NAMES:
        raise ConfigError(f"unknown exit policy {policy!r}; choose from {', '.join(POLICY_NAMES)}")
    if not 0 <= max_drop <= 100:
        raise ConfigError(f"the allowed accuracy drop must be in [0, 100] pp, got {max_drop}")
    correct = torch.stack([z.argmax(1) == labels for z in exit_logits])      # (E + 1, N)
    original = correct[-1].float().mean().item()
    floor = original - max_drop / 100
    costs = costs_for_policy(policy, costs)
    floors = [floor] + ([original - d / 100 for d in CURVE_DROPS] if curve else [])
    options = []
    for lam in (lambdas if policy == "learned" else (None,)):
        gates = fit_gates(exit_logits, labels, costs, lam) if lam is not None else []
        found = search_many(policy_scores(policy, exit_logits, gates), correct, costs, floors, grid)
        options.append((found[0], gates, lam, found[1:]))
    result, gates, lam, points = min(options, key=lambda o: (o[0].cost, -o[0].accuracy))
    points = frontier(points)
    return PolicyChoice(policy, result, gates, lam, points)


def calibrate(exit_logits: list[torch.Tensor], labels: torch.Tensor, costs: StageCosts, max_drop: float,
              policies=POLICY_NAMES, lambdas=LAMBDAS, grid: int = 100) -> tuple[PolicyChoice, dict[str, PolicyChoice]]:
    """(the cheapest policy's choice, every policy's choice)."""
    choices = {p: calibrate_policy(p, exit_logits, labels, costs, max_drop, lambdas, grid) for p in policies}
    best = min(choices.values(), key=lambda c: (c.result.cost, -c.result.accuracy))
    return best, choices
