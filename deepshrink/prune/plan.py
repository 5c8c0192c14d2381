"""The channel plan: plain data saying, for each layer dimension, which indices to keep.

``{"layers": {"layer1.0.conv1": {"out": [0, 3, 5, ...], "in": [...]}, ...}}``: indices along
weight dim 0 (``out``) or dim 1 (``in``) of the *original* layer, in the order they are kept
(a permutation sorts channels). A plan is computed from the groups and the channels each keeps,
applied by the cutters, stored in the model file (``ModelInfo.extra["channel_plan"]``) and
re-applied to the freshly built architecture when the file is loaded (as Distiller does with
its thinning recipes). Two plans applied one after the other compose into one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import FormatError, ModelError
from .cutters import cutter_for
from .graph import Group

__all__ = ["ChannelPlan", "PLAN_KEY", "make_plan", "apply_plan", "compose_plans"]

PLAN_KEY = "channel_plan"
DIMS = ("out", "in")


@dataclass
class ChannelPlan:
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"layers": {k: {d: list(map(int, v)) for d, v in dims.items()} for k, dims in self.layers.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw, where: str = "channel plan") -> "ChannelPlan":
        layers = raw.get("layers") if isinstance(raw, dict) else None
        if not isinstance(layers, dict):
            raise FormatError(f"{where}: expected an object with a 'layers' object")
        out: dict[str, dict[str, list[int]]] = {}
        for name, dims in layers.items():
            if not isinstance(dims, dict) or not set(dims) <= set(DIMS):
                raise FormatError(f"{where}: layer {name!r} must map 'out'/'in' to index lists")
            for d, idx in dims.items():
                if not isinstance(idx, list) or not idx or not all(
                        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx):
                    raise FormatError(f"{where}: layer {name!r} dim {d!r}: expected a non-empty list of indices")
                if len(set(idx)) != len(idx):
                    raise FormatError(f"{where}: layer {name!r} dim {d!r}: repeated indices")
            out[name] = {d: list(v) for d, v in dims.items()}
        return cls(out)

    @classmethod
    def from_json(cls, text: str, where: str = "channel plan") -> "ChannelPlan":
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: not valid JSON ({exc})") from None

    def __bool__(self) -> bool:
        return bool(self.layers)


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


@torch.no_grad()
def apply_plan(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """Cut ``model`` in place as the plan says; returns it."""
    for name, dims in plan.layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"channel plan names layer {name!r}, which the model does not have") from None
        for dim, idx in dims.items():
            cutter_for(module, dim, name)(module, torch.as_tensor(idx, dtype=torch.long), name=name)
    return model


def compose_plans(first: ChannelPlan, second: ChannelPlan) -> ChannelPlan:
    """One plan doing ``first`` then ``second`` (whose indices refer to first's result)."""
    layers = {k: dict(v) for k, v in first.layers.items()}
    for name, dims in second.layers.items():
        for dim, idx in dims.items():
            base = layers.get(name, {}).get(dim)
            layers.setdefault(name, {})[dim] = [base[i] for i in idx] if base is not None else list(idx)
    return ChannelPlan(layers)
