"""Making a channel plan from the coupled groups and the channels each keeps.

The plan itself (plain data, applying and composing plans) is :mod:`deepshrink.channel_plan`,
below the model-file layer that re-applies it on load; it is re-exported here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..channel_plan import PLAN_KEY, ChannelPlan, apply_plan, compose_plans
from .graph import Group

__all__ = ["ChannelPlan", "PLAN_KEY", "make_plan", "apply_plan", "compose_plans"]


def _dim_size(module: nn.Module, dim: str) -> int:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features if dim == "out" else module.in_features
    return module.out_channels if dim == "out" else module.in_channels


def make_plan(groups: list[Group], keep: dict[int, torch.Tensor]) -> ChannelPlan:
    """The plan keeping channels ``keep[group.id]`` (ordered) of each group; others untouched."""
    pieces: dict[tuple[str, str], dict[int, tuple[int, list[int]]]] = {}
    for g in groups:
        if g.id not in keep:
            continue
        k = torch.as_tensor(keep[g.id], dtype=torch.long)
        for m in g.members:
            cols = (m.offset + k[:, None] * m.block + torch.arange(m.block)).flatten().tolist()
            pieces.setdefault((m.module, m.dim), {})[m.offset] = (g.size * m.block, cols)
    mods = dict(groups[0].modules) if groups else {}
    layers: dict[str, dict[str, list[int]]] = {}
    for (name, dim), segs in sorted(pieces.items()):
        size, pos, idx = _dim_size(mods[name], dim), 0, []
        for offset in sorted(segs):
            length, cols = segs[offset]
            idx += list(range(pos, offset)) + cols
            pos = offset + length
        idx += list(range(pos, size))
        if idx != list(range(size)):
            layers.setdefault(name, {})[dim] = idx
    return ChannelPlan(layers)


