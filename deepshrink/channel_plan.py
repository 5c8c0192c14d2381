"""The channel plan: plain data saying, for each layer dimension, which indices to keep.

``{"layers": {"layer1.0.conv1": {"out": [0, 3, 5, ...], "in": [...]}, ...}}``: indices along
weight dim 0 (``out``) or dim 1 (``in``) of the *original* layer, in the order they are kept
(a permutation sorts channels). Structured pruning computes a plan (:func:`deepshrink.prune.plan.make_plan`),
the cutters of :mod:`deepshrink.layers` apply it, the model file stores it
(``ModelInfo.extra["channel_plan"]``) and the model-file layer re-applies it to the freshly built
architecture on load (as Distiller does with its thinning recipes). Two plans applied one after
the other compose into one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .errors import FormatError, ModelError
from .layers import cutter_for

__all__ = ["ChannelPlan", "IndexPlan", "PLAN_KEY", "DIMS", "apply_plan", "compose_plans", "parse_index_lists"]

PLAN_KEY = "channel_plan"
DIMS = ("out", "in")


def parse_index_lists(raw, where: str, keys: tuple[str, ...], unit: str, part: str,
                      increasing: bool = False) -> dict[str, dict[str, list[int]]]:
    """``raw["layers"]`` of a stored plan, checked: {name: {key: [index, ...]}} with ``keys`` only,
    every list non-empty, of indices >= 0, none repeated (``increasing``: in increasing order).
    ``unit``/``part`` name a layer and a key in the FormatError (file data is untrusted)."""
    layers = raw.get("layers") if isinstance(raw, dict) else None
    if not isinstance(layers, dict):
        raise FormatError(f"{where}: expected an object with a 'layers' object")
    out: dict[str, dict[str, list[int]]] = {}
    for name, parts in layers.items():
        if not isinstance(parts, dict) or not set(parts) <= set(keys):
            raise FormatError(f"{where}: {unit} {name!r} must map {'/'.join(repr(k) for k in keys)} to index lists")
        for k, idx in parts.items():
            if not isinstance(idx, list) or not idx or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx):
                raise FormatError(f"{where}: {unit} {name!r} {part} {k!r}: expected a non-empty list of indices")
            if len(set(idx)) != len(idx) or (increasing and idx != sorted(idx)):
                raise FormatError(f"{where}: {unit} {name!r} {part} {k!r}: "
                                  + ("indices must increase, none repeated" if increasing else "repeated indices"))
        out[name] = {k: list(v) for k, v in parts.items()}
    return out


@dataclass
class IndexPlan:
    """A stored plan: {layer or block name: {key: [kept index, ...]}}, plain data. Subclasses name
    their keys (``KEYS``), what a name and a key are called in errors, and whether the indices
    must increase."""

    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    KEYS: ClassVar[tuple[str, ...]] = ()
    UNIT: ClassVar[str] = "layer"
    PART: ClassVar[str] = "key"
    INCREASING: ClassVar[bool] = False
    WHAT: ClassVar[str] = "plan"

    def to_dict(self) -> dict:
        return {"layers": {k: {d: list(map(int, v)) for d, v in parts.items()} for k, parts in self.layers.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw, where: str | None = None):
        return cls(parse_index_lists(raw, where or cls.WHAT, cls.KEYS, cls.UNIT, cls.PART, cls.INCREASING))

    @classmethod
    def from_json(cls, text: str, where: str | None = None):
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where or cls.WHAT}: not valid JSON ({exc})") from None

    def __bool__(self) -> bool:
        return bool(self.layers)


@dataclass
class ChannelPlan(IndexPlan):
    """{layer: {"out": [kept output channels], "in": [kept input channels]}}."""

    KEYS: ClassVar[tuple[str, ...]] = DIMS
    UNIT: ClassVar[str] = "layer"
    PART: ClassVar[str] = "dim"
    WHAT: ClassVar[str] = "channel plan"


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


def compose_plans(first: IndexPlan, second: IndexPlan) -> IndexPlan:
    """One plan doing ``first`` then ``second`` (whose indices refer to first's result), of
    ``first``'s kind (a channel plan, or a head plan)."""
    layers = {k: dict(v) for k, v in first.layers.items()}
    for name, dims in second.layers.items():
        for dim, idx in dims.items():
            base = layers.get(name, {}).get(dim)
            layers.setdefault(name, {})[dim] = [base[i] for i in idx] if base is not None else list(idx)
    return type(first)(layers)
