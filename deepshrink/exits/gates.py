"""Learned exit decisions: oracle labels, cost-aware sample weights, and a weighted logistic fit
(Bolukbasi, Wang, Dekel & Saligrama 2017, "Adaptive Neural Networks for Efficient Inference").

The notes' problem: minimise the expected inference time subject to a bound on the loss. With a
Lagrange multiplier ``lambda`` it splits into one decision per exit ``k`` and sample ``x``:

    leave here:  loss_k(x)                                        (0-1 loss of exit k)
    go on:       loss_later(x) + lambda (C_later(x) - C_k) / C    (where the later exits would
                                                                   take x, and what that costs)

with ``C_k`` the cost of a sample leaving at exit ``k`` (:func:`.cost.path_costs`, measured) and
``C`` the original model's. The cheaper option is the **oracle label** (1: leave), and the gap
between the two the **sample weight**: how much a wrong decision on ``x`` would cost. So a sample
the exit gets right is labelled "leave" with weight ``loss_later + lambda dC``; one it gets wrong
but a later exit gets right is "go on" with weight ``1 - lambda dC`` (when positive); one nobody
gets right is "leave" with weight ``lambda dC``: going on would buy nothing. For ``lambda dC < 1``
the label is the notes' oracle: leave at the earliest exit that is correct.

The decision function ``gamma_k`` (:func:`deepshrink.exits.policies.gate_score`) is then a
weighted binary classifier (logistic regression, L-BFGS) on the exit's logit features. Exits are
fitted from the last to the first, since "going on" from exit ``k`` means whatever the gates
after it decide (each at 0.5, its own decision boundary; the threshold search tunes them after).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..exit_heads import Gate
from .cost import StageCosts, path_costs
from .policies import gate_features, gate_score
from .search import simulate

__all__ = ["oracle_targets", "fit_gate", "fit_gates"]


def oracle_targets(correct_here: torch.Tensor, correct_later: torch.Tensor, cost_here: float,
                   cost_later: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, weights), each (N,): label 1 = leave at this exit; costs are fractions of the
    original model's. ``correct_*`` are booleans; ``cost_later`` (N,) what going on costs each sample."""
    leave = (~correct_here).double()
    go_on = (~correct_later).double() + lam * (cost_later.double() - cost_here)
    labels = (leave <= go_on).double()
    return labels, (leave - go_on).abs()


def fit_gate(features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, l2: float = 1e-3,
             steps: int = 100) -> Gate:
    """Weighted logistic regression of ``labels`` (N,) on standardised ``features`` (N, d)."""
    x = features.double()
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    total = weights.sum()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    if total > 0:
        sw = weights.double() / total
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (F.binary_cross_entropy_with_logits(z @ w + b, labels.double(), reduction="none") * sw).sum()
            loss = loss + l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
    return Gate(w.detach().tolist(), float(b.detach()), mean.tolist(), std.tolist())


def fit_gates(exit_logits: list[torch.Tensor], labels: torch.Tensor, costs: StageCosts, lam: float) -> list[Gate]:
    """One gate per early exit. ``exit_logits``: E + 1 tensors (N, C), the model's output last;
    ``labels`` (N,); ``lam``: the price of one full model's cost in errors (lambda above)."""
    e = len(exit_logits) - 1
    correct = torch.stack([z.argmax(1) == labels for z in exit_logits])     # (E + 1, N)
    paths = torch.tensor(path_costs(costs, [True] * e), dtype=torch.float64) / max(costs.full, 1e-12)
    gates: list[Gate | None] = [None] * e
    scores = torch.zeros(e, labels.numel(), dtype=torch.float64)
    for k in reversed(range(e)):
        later = simulate(scores[k + 1:], [0.5] * (e - k - 1)) + k + 1       # (N,) where going on ends
        here_ok, later_ok = correct[k], correct.gather(0, later.unsqueeze(0)).squeeze(0)
        y, weight = oracle_targets(here_ok, later_ok, float(paths[k]), paths[later], lam)
        feats = gate_features(exit_logits[k])
        gates[k] = fit_gate(feats, y, weight)
        scores[k] = gate_score(exit_logits[k], gates[k]).double()
    return gates
