"""Placing exits: which layers, what each head looks like, and checking that a cut is sound.

Exits go at named layers (``layer1``, ``features.6``): any module of the model, reached through the
module structure, so models fx cannot trace work too. Without names, :func:`default_exit_layers`
takes the end of each resolution stage (the last module whose output has that spatial size; a
pooling layer right after it instead, so the head reads the smaller map), except the last stage
and any exit past ``max_share`` of the model's MACs, where leaving early would save little.

Each head's input shape comes from one forward pass of an example; every cut is checked
(:func:`.taps.check_cut`): the layers after it must run on a subset of the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..exit_heads import MAX_HEADS, ExitPlan, HeadSpec, attach_heads
from ..profile import profile_model
from .cost import Prefix
from .taps import check_cut, layer_outputs, module_at

__all__ = ["default_exit_layers", "default_width", "plan_exits", "attach_exits", "MAX_SHARE"]

MAX_SHARE = 0.8            # default exits: none past this share of the model's MACs
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _completions(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, module, output shape) of every module, in the order their forward calls finish."""
    done: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = [m.register_forward_hook(lambda mod, a, out, name=name: done.append(
        (name, mod, tuple(out.shape) if isinstance(out, torch.Tensor) else ())))
        for name, m in model.named_modules() if name and not name.startswith("exit_heads")]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return done


def _macs(model: nn.Module, x: torch.Tensor, layer: str | None) -> int:
    target = model if layer is None else Prefix(model, layer).eval()
    return int(profile_model(target, x).totals["macs"])


def default_exit_layers(model: nn.Module, example: torch.Tensor, max_share: float = MAX_SHARE) -> list[str]:
    """The end of each resolution stage but the last, up to ``max_share`` of the model's MACs."""
    was = model.training
    model.eval()
    try:
        done = _completions(model, example[:1])
        stages: list[tuple[tuple[int, ...], int]] = []    # (spatial size, index in ``done`` of its last module)
        for i, (_, _, shape) in enumerate(done):
            if len(shape) != 4 or shape[2:] == (1, 1):          # a global pooling's output is no stage
                continue
            if stages and stages[-1][0] == shape[2:]:
                stages[-1] = (shape[2:], i)
            elif not any(s == shape[2:] for s, _ in stages):
                stages.append((shape[2:], i))
        picks = []
        for _, i in stages[:-1]:
            name = done[i][0]
            nxt = next((d for d in done[i + 1:] if not list(d[1].children())), None)   # the next leaf to finish
            if nxt is not None and isinstance(nxt[1], POOLS):
                name = nxt[0]
            if name not in picks:
                picks.append(name)
        full = _macs(model, example[:1], None)
        return [p for p in picks if _macs(model, example[:1], p) <= max_share * full]
    finally:
        model.train(was)


def default_width(in_shape: list[int]) -> int:
    """A head's width when none is given: the channels it reads (a flat feature: at most 256 units)."""
    return in_shape[0] if len(in_shape) == 3 else min(256, in_shape[0])


def plan_exits(model: nn.Module, example: torch.Tensor, layers: list[str] | None, num_classes: int,
               depth: int = 3, width: int | None = None, where: str = "model") -> ExitPlan:
    """An exit plan (no policy yet) for heads at ``layers`` (default :func:`default_exit_layers`),
    each cut checked and each head's input shape measured."""
    if depth < 0 or (width is not None and width < 1):
        raise ConfigError(f"head depth must be >= 0 and width >= 1 (got {depth}, {width})")
    if layers is None:
        layers = default_exit_layers(model, example)
        if not layers:
            raise ModelError(f"{where}: found no place for an exit (no resolution stage ends before "
                             f"{MAX_SHARE:.0%} of the MACs); name the layers (--at LAYER ...)")
    if not layers or len(layers) > MAX_HEADS or len(set(layers)) != len(layers):
        raise ConfigError(f"exit layers: 1 to {MAX_HEADS} different layer names, got {layers}")
    for name in layers:
        module_at(model, name, where)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs, _ = layer_outputs(model, example[:1], list(layers), full=True)
        order = _order(model, example[:1], list(layers))
        if order != list(layers):
            raise ConfigError(f"exit layers must be given in the order the model runs them: {order}")
        for name in layers:
            check_cut(model, name, example, where)
    finally:
        model.train(was)
    heads = []
    for name, out in zip(layers, outs):
        shape = list(out.shape[1:])
        if not 1 <= len(shape) <= 3:
            raise ModelError(f"{where}: exit layer {name!r} outputs {list(out.shape)}; a head reads (N, C, H, W) "
                             "or (N, features)")
        heads.append(HeadSpec(name, shape, num_classes, depth, width if width is not None else default_width(shape)))
    return ExitPlan(heads)


def _order(model: nn.Module, x: torch.Tensor, layers: list[str]) -> list[str]:
    """``layers`` in the order their outputs are produced."""
    done = [name for name, _, _ in _completions(model, x)]
    return sorted(layers, key=lambda n: done.index(n) if n in done else len(done))


def attach_exits(model: nn.Module, example: torch.Tensor, layers: list[str] | None, num_classes: int,
                 depth: int = 3, width: int | None = None, where: str = "model") -> ExitPlan:
    """:func:`plan_exits`, then fresh heads registered on ``model`` (its ``exit_heads``)."""
    plan = plan_exits(model, example, layers, num_classes, depth, width, where)
    attach_heads(model, plan, where)
    return plan
