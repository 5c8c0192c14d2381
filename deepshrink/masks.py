"""Pruning masks kept as buffers beside the weights (``<param>_mask``, bool; :mod:`deepshrink.names`).

The mask travels in the state dict, so a checkpoint describes its own sparsity and masks
survive save/load. ``apply_masks`` zeroes masked weights; :class:`MaskCallback` does it after
every optimizer step, so fine-tuning never revives a pruned weight; ``squash`` bakes the
masks into the weights and drops the buffers (``torch.nn.utils.prune.remove`` in spirit).
``sparsity`` and ``layer_sparsities`` count over the masked weights (what was pruned), or the
default targets of :mod:`deepshrink.targets` when nothing is masked: never over weights that no
pruning would touch (embeddings, the output layer), which would dilute the figure.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .names import MASK_SUFFIX
from .targets import prunable_weights  # which weights are pruned by default: deepshrink/targets.py

__all__ = [
    "MASK_SUFFIX",
    "prunable_weights",
    "target_weights",
    "set_mask",
    "get_masks",
    "apply_masks",
    "squash",
    "MaskCallback",
    "sparsity",
    "layer_sparsities",
]


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = param_name.rpartition(".")
    try:
        return (model.get_submodule(mod_name) if mod_name else model), attr
    except AttributeError:
        raise ConfigError(f"no layer named {mod_name!r} in the model") from None


def set_mask(model: nn.Module, param_name: str, mask: torch.Tensor) -> None:
    """Attach (or replace) the mask of one parameter and zero its pruned weights."""
    module, attr = _owner(model, param_name)
    w = getattr(module, attr, None)
    if not isinstance(w, torch.Tensor):
        raise ConfigError(f"layer {param_name!r} has no tensor {attr!r}")
    if mask.shape != w.shape:
        raise ConfigError(f"mask for {param_name!r} has shape {tuple(mask.shape)}, weight {tuple(w.shape)}")
    mask = mask.to(dtype=torch.bool, device=w.device)
    module.register_buffer(attr + MASK_SUFFIX, mask)
    with torch.no_grad():
        w.mul_(mask)


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask} for every masked parameter."""
    out = {}
    for name, buf in model.named_buffers():
        if name.endswith(MASK_SUFFIX):
            out[name[: -len(MASK_SUFFIX)]] = buf
    return out


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    for name, mask in get_masks(model).items():
        module, attr = _owner(model, name)
        getattr(module, attr).mul_(mask)


def squash(model: nn.Module) -> nn.Module:
    """Bake the masks into the weights and remove the mask buffers."""
    apply_masks(model)
    for name in list(get_masks(model)):
        module, attr = _owner(model, name)
        delattr(module, attr + MASK_SUFFIX)
    return model


class MaskCallback:
    """``fit`` callback: re-apply the masks after every optimizer step."""

    def __call__(self, model: nn.Module, info=None) -> None:
        apply_masks(model)


def target_weights(model: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """The pruning targets a figure is computed over: the named weights; else the masked ones (what
    was pruned, whatever the include/exclude globs were); else the default targets."""
    if not names:
        names = list(get_masks(model)) or list(prunable_weights(model))
    out = {}
    for n in names:
        module, attr = _owner(model, n)
        w = getattr(module, attr, None)
        if not isinstance(w, torch.Tensor):
            raise ConfigError(f"layer {n!r} has no tensor {attr!r}")
        out[n] = w
    return out


def sparsity(model: nn.Module, names=None) -> float:
    """Fraction of zeros over the pruning targets (:func:`target_weights`) or the named weights."""
    chosen = list(target_weights(model, names).values())
    total = sum(int(w.numel()) for w in chosen)
    zeros = sum(int(w.numel() - torch.count_nonzero(w)) for w in chosen)
    return zeros / total if total else 0.0


def layer_sparsities(model: nn.Module, names=None) -> dict[str, float]:
    """{weight name: fraction of zeros} over the pruning targets (:func:`target_weights`) or the named weights."""
    return {n: 1.0 - int(torch.count_nonzero(w)) / w.numel() for n, w in target_weights(model, names).items()}
