"""What to cut: importance criteria, each a plain callable ``group -> scores`` of shape (C,).

Scores are summed over the coupled layers of the group; a low score means a channel to remove.

* ``l1`` / ``l2``: norm of each filter, s_c = sum over producing layers of ||W_l[c]||_p
  (Li et al. 2017, "Pruning Filters for Efficient ConvNets": the L1 norm of filter c).
* ``fro``: the input-channel Frobenius norm, s_c = sum over consuming layers of
  ||W_l[:, c]||_F (the weights that read channel c: how much the next layers rely on it).
* ``fpgm``: distance to the other filters, s_c = sum over producing layers of
  sum_j ||W_l[c] - W_l[j]||_2; filters near the geometric median are the most replaceable
  (He et al. 2019, "Filter Pruning via Geometric Median").
* ``bn``: the BatchNorm scale |gamma_c| (Liu et al. 2017, "network slimming"); a group without
  BatchNorm gets no scores (None) and is left whole.
* ``random``: uniform scores from a seeded generator (a baseline).
"""

from __future__ import annotations

import zlib
from typing import Callable

import torch

from ..errors import ConfigError
from .graph import Group, Member

__all__ = ["CRITERIA", "get_criterion", "l1_norm", "l2_norm", "input_frobenius", "fpgm", "bn_scale",
           "random_scores"]

Criterion = Callable[[Group], "torch.Tensor | None"]


def _producers(group: Group) -> list[Member]:
    """Members holding one filter per channel: conv/linear output rows (depthwise included)."""
    return [m for m in group.members if m.dim == "out"
            and getattr(group.modules[m.module], "weight", None) is not None
            and group.modules[m.module].weight.dim() >= 2]


def _sum(group: Group, members: list[Member], per_member) -> torch.Tensor | None:
    if not members:
        return None
    return sum(per_member(group.rows(m)).float() for m in members)


def l1_norm(group: Group) -> torch.Tensor | None:
    return _sum(group, _producers(group), lambda rows: rows.abs().sum(1))


def l2_norm(group: Group) -> torch.Tensor | None:
    return _sum(group, _producers(group), lambda rows: rows.norm(dim=1))


def input_frobenius(group: Group) -> torch.Tensor | None:
    return _sum(group, [m for m in group.members if m.dim == "in"], lambda rows: rows.norm(dim=1))


def fpgm(group: Group) -> torch.Tensor | None:
    # (C, K) filters -> (C, C) pairwise distances -> (C,) total distance to the others
    return _sum(group, _producers(group), lambda rows: torch.cdist(rows[None].float(), rows[None].float())[0].sum(1))


def bn_scale(group: Group) -> torch.Tensor | None:
    bns = [m for m in group.members if isinstance(group.modules[m.module], torch.nn.modules.batchnorm._BatchNorm)
           and group.modules[m.module].weight is not None]
    return _sum(group, bns, lambda rows: rows.abs().sum(1))


def random_scores(group: Group, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(group.name.encode()))
    return torch.rand(group.size, generator=g)


CRITERIA: dict[str, Criterion] = {
    "l1": l1_norm, "l2": l2_norm, "fro": input_frobenius, "fpgm": fpgm, "bn": bn_scale, "random": random_scores,
}


def get_criterion(criterion: str | Criterion, seed: int = 0) -> Criterion:
    """A criterion by name (seeded if random), or the callable itself."""
    if callable(criterion):
        return criterion
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion == "random":
        return lambda group: random_scores(group, seed)
    return CRITERIA[criterion]
