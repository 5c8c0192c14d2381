"""Exit policies: a score per sample from an exit head's logits; the sample leaves there when its
score reaches the exit's threshold (``score >= threshold``). Pure functions on (N, classes) logits.

* ``max_softmax``: the top softmax probability, ``max_c p_c`` (BranchyNet's confidence, as in
  Teerapittayanon et al. 2016 and most cascades since).
* ``entropy``: minus the entropy of the softmax, ``sum_c p_c log p_c`` (BranchyNet's own rule,
  "exit when the entropy is below a threshold", written as a score so that higher means surer).
* ``learned``: a decision function ``gamma(x) = sigmoid(w . phi + b)`` on the logit features
  ``phi`` = (top probability, top-1 minus top-2 probability, entropy / log(classes), top-1 minus
  top-2 logit), standardised; fitted on oracle labels with sample weights
  (:mod:`deepshrink.exits.gates`, after Bolukbasi et al. 2017). It costs one dot product
  (``GATE_FEATURES`` MACs) per sample that reaches the exit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..exit_heads import GATE_FEATURES, POLICY_NAMES, Gate

__all__ = ["POLICIES", "CLI_NAMES", "policy_name", "max_softmax_score", "entropy_score", "gate_features",
           "gate_score", "exit_score", "decision_macs"]

# the command line spells them with dashes
CLI_NAMES = {name.replace("_", "-"): name for name in POLICY_NAMES}


def policy_name(name: str) -> str:
    """``max-softmax`` or ``max_softmax`` -> ``max_softmax``; anything else a ConfigError."""
    key = CLI_NAMES.get(name, name)
    if key not in POLICY_NAMES:
        raise ConfigError(f"unknown exit policy {name!r}; choose from {', '.join(CLI_NAMES)}")
    return key


def max_softmax_score(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,): the top softmax probability."""
    return F.softmax(logits.float(), dim=1).amax(1)


def entropy_score(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,): minus the softmax's entropy in nats (0 for a sure head, -log C for a uniform one)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return (logp.exp() * logp).sum(1)


def gate_features(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, GATE_FEATURES): top probability, probability margin, normalised entropy, logit margin."""
    z = logits.float()
    logp = F.log_softmax(z, dim=1)
    p = logp.exp()
    if z.shape[1] >= 2:
        top_z = z.topk(2, dim=1).values              # (N, 2)
        top_p = p.topk(2, dim=1).values
    else:
        top_z = torch.cat([z, z], 1)
        top_p = torch.cat([p, torch.zeros_like(p)], 1)
    ent = -(p * logp).sum(1) / max(math.log(z.shape[1]), 1e-12)
    return torch.stack([top_p[:, 0], top_p[:, 0] - top_p[:, 1], ent, top_z[:, 0] - top_z[:, 1]], dim=1)


def gate_score(logits: torch.Tensor, gate: Gate) -> torch.Tensor:
    """(N, C) -> (N,): the decision function's probability of leaving here."""
    phi = gate_features(logits)
    mean = torch.tensor(gate.mean, dtype=phi.dtype)
    std = torch.tensor(gate.std, dtype=phi.dtype)
    w = torch.tensor(gate.weight, dtype=phi.dtype).unsqueeze(0)            # (1, d)
    b = torch.tensor([gate.bias], dtype=phi.dtype)
    return torch.sigmoid(F.linear((phi - mean) / std, w, b)).squeeze(1)  # d MACs per sample


POLICIES = {"max_softmax": max_softmax_score, "entropy": entropy_score}


def exit_score(policy: str, logits: torch.Tensor, gate: Gate | None = None) -> torch.Tensor:
    """The score of ``policy`` for each row of ``logits``."""
    if policy == "learned":
        if gate is None:
            raise ConfigError("the learned policy needs a fitted gate at every exit it uses")
        return gate_score(logits, gate)
    return POLICIES[policy_name(policy)](logits)


def decision_macs(policy: str) -> int:
    """MACs of one decision (per sample reaching an exit): the gate's dot product, else none
    (softmax, entropy and top-k are additions, exponentials and comparisons, not products)."""
    return GATE_FEATURES if policy == "learned" else 0
