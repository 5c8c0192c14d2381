"""Scoring the filters of consecutive layers independently or greedily (Li et al. 2017, section 3.2).

When several layers are pruned at once, a filter of layer i+1 is a stack of kernels, one per
input channel, i.e. per feature map of layer i. Its L1 norm ``s_j = sum_c sum |W_{i+1}[j, c]|``
can be taken over

* every kernel (*independent*: each layer is scored as if no other layer were pruned), or
* only the kernels that read channels layer i still keeps (*greedy*: the kernels of feature maps
  already removed are gone, so they do not count: ``s_j = sum_{c kept} sum |W_{i+1}[j, c]|``).

Greedy scoring goes through the coupled groups (:mod:`.graph`) in the order the trace created them
(forward order: a group's channels are produced before they are read); each group keeps the
channels :func:`.channel.choose_channels` picks from its greedy scores, and the channels it removes
are left out of the scores of every later group whose filters read them.
"""

from __future__ import annotations

import torch

from .channel import choose_channels
from .graph import Group

__all__ = ["filter_l1", "greedy_l1_scores"]


def _producers(group: Group) -> list:
    """Members holding one filter per channel (conv/linear output rows, depthwise included)."""
    return [m for m in group.members if m.dim == "out"
            and getattr(group.modules[m.module], "weight", None) is not None
            and group.modules[m.module].weight.dim() >= 2]


def filter_l1(group: Group, removed_inputs: dict[str, list[int]] | None = None) -> torch.Tensor | None:
    """(C,) L1 norm of each filter of ``group``, not counting the weight columns (dim 1) listed in
    ``removed_inputs[layer]``: the kernels reading removed channels. With none removed this is
    :func:`.criteria.l1_norm`. None when no layer of the group has filters."""
    members = _producers(group)
    if not members:
        return None
    total = torch.zeros(group.size)
    for m in members:
        w = group.modules[m.module].weight.detach().abs().float()         # (O, I, kh, kw) or (O, I)
        dead = (removed_inputs or {}).get(m.module)
        if dead:
            w = w.clone()
            w[:, dead] = 0
        span = w[m.offset:m.offset + group.size * m.block]
        total += span.reshape(group.size, -1).sum(1)
    return total


def _removed_columns(group: Group, keep: torch.Tensor) -> dict[str, list[int]]:
    """Weight columns (dim 1) of the layers reading ``group`` that its removed channels index."""
    gone = sorted(set(range(group.size)) - set(keep.tolist()))
    cols: dict[str, list[int]] = {}
    for m in group.members:
        if m.dim == "in":
            cols.setdefault(m.module, []).extend(m.offset + c * m.block + j for c in gone for j in range(m.block))
    return cols


def greedy_l1_scores(groups: list[Group], ids: list[int], ratio: float, min_channels: int = 1
                     ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Greedy L1 scores and the channels kept, for the groups ``ids`` pruned by ``ratio`` each.

    Returns ``(scores, keep)``: ``scores[id]`` (C,) counts only the kernels reading channels that
    the groups before it keep; ``keep[id]`` the kept channels (ascending), chosen from those scores.
    """
    by_id = {g.id: g for g in groups}
    removed: dict[str, list[int]] = {}
    scores: dict[int, torch.Tensor] = {}
    keep: dict[int, torch.Tensor] = {}
    for gid in sorted(ids):                                    # trace order: producers before readers
        g = by_id[gid]
        s = filter_l1(g, removed)
        if s is None:
            continue
        scores[gid] = s
        keep[gid] = choose_channels(groups, {gid: s}, ratio, min_channels=min_channels)[gid]
        for layer, cols in _removed_columns(g, keep[gid]).items():
            removed.setdefault(layer, []).extend(cols)
    return scores, keep
