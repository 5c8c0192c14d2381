"""How to cut a layer type: a registry ``{layer type: {dim: cutter}}``, and the size attributes
that must follow a layer's tensors.

Plain module surgery, torch only: structured pruning cuts with it (:mod:`deepshrink.prune`), and
the model-file layer re-applies stored channel plans and resizes pruned layers with it on load.

A cutter keeps the given indices (in the given order, so a permutation sorts channels) along
one dimension of a layer's tensors and updates the layer's size attributes:

* ``out``: weight dim 0 and the bias (conv filters, linear rows), BatchNorm's four vectors, and
  for a depthwise convolution (groups == in == out channels) its groups and input count too;
* ``in``: weight dim 1 (conv input channels, linear columns).

Fine-grained pruning masks (``weight_mask``, ``bias_mask``) are cut with their tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import ModelError
from .names import MASK_SUFFIX

__all__ = ["CUTTERS", "cutter_for", "sync_layer_sizes", "prune_conv_out_channels", "prune_conv_in_channels",
           "prune_linear_out_channels", "prune_linear_in_channels", "prune_batchnorm_channels"]


def _take(module: nn.Module, names: tuple[str, ...], dim: int, idx: torch.Tensor) -> None:
    """Replace each named tensor (and its mask) by its slice ``index_select(dim, idx)``."""
    for base in names:
        for attr in (base, base + MASK_SUFFIX):
            t = getattr(module, attr, None)
            if not isinstance(t, torch.Tensor):
                continue
            new = t.detach().index_select(dim, idx.to(t.device)).contiguous().clone()
            if isinstance(t, nn.Parameter):
                setattr(module, attr, nn.Parameter(new, requires_grad=t.requires_grad))
            else:
                module.register_buffer(attr, new)


def _check(module: nn.Module, name: str, idx: torch.Tensor, size: int) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() != 1 or len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= size:
        raise ModelError(f"layer {name or type(module).__name__}: kept indices must be a non-empty list "
                         f"within [0, {size}), got {len(idx)} indices")
    return idx


def _is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def prune_conv_out_channels(conv: nn.modules.conv._ConvNd, idx, name: str = "") -> None:
    """Keep filters ``idx``: weight (O, I/g, k...) -> (len(idx), I/g, k...)."""
    idx = _check(conv, name, idx, conv.out_channels)
    depthwise = _is_depthwise(conv)
    _take(conv, ("weight", "bias"), 0, idx)
    conv.out_channels = len(idx)
    if depthwise:  # filter i reads only input channel i
        conv.groups = conv.in_channels = len(idx)


def prune_conv_in_channels(conv: nn.modules.conv._ConvNd, idx, name: str = "") -> None:
    """Keep input channels ``idx``: weight (O, I, k...) -> (O, len(idx), k...); groups == 1 only."""
    if _is_depthwise(conv):
        return  # its inputs follow its filters (cut as "out")
    if conv.groups != 1:
        raise ModelError(f"layer {name}: cannot cut the inputs of a grouped convolution (groups={conv.groups})")
    idx = _check(conv, name, idx, conv.in_channels)
    _take(conv, ("weight",), 1, idx)
    conv.in_channels = len(idx)


def prune_linear_out_channels(linear: nn.Linear, idx, name: str = "") -> None:
    """Keep rows ``idx``: weight (O, I) -> (len(idx), I), bias (O,) -> (len(idx),)."""
    idx = _check(linear, name, idx, linear.out_features)
    _take(linear, ("weight", "bias"), 0, idx)
    linear.out_features = len(idx)


def prune_linear_in_channels(linear: nn.Linear, idx, name: str = "") -> None:
    """Keep columns ``idx``: weight (O, I) -> (O, len(idx))."""
    idx = _check(linear, name, idx, linear.in_features)
    _take(linear, ("weight",), 1, idx)
    linear.in_features = len(idx)


def prune_batchnorm_channels(bn: nn.modules.batchnorm._BatchNorm, idx, name: str = "") -> None:
    """Keep channels ``idx`` of gamma, beta and the running statistics."""
    idx = _check(bn, name, idx, bn.num_features)
    _take(bn, ("weight", "bias", "running_mean", "running_var"), 0, idx)
    bn.num_features = len(idx)


Cutter = Callable[..., None]

CUTTERS: dict[type, dict[str, Cutter]] = {
    nn.modules.conv._ConvNd: {"out": prune_conv_out_channels, "in": prune_conv_in_channels},
    nn.Linear: {"out": prune_linear_out_channels, "in": prune_linear_in_channels},
    nn.modules.batchnorm._BatchNorm: {"out": prune_batchnorm_channels},
}


def cutter_for(module: nn.Module, dim: str, name: str = "") -> Cutter:
    """The registered cutter for ``module``'s type (or its nearest base class) and ``dim``."""
    for cls in type(module).__mro__:
        if cls in CUTTERS and dim in CUTTERS[cls]:
            return CUTTERS[cls][dim]
    raise ModelError(f"layer {name or '?'} ({type(module).__name__}): no cutter for its '{dim}' dimension")


def sync_layer_sizes(mod: nn.Module) -> None:
    """Make a layer's size attributes (channels, features, groups) agree with its tensors."""
    if isinstance(mod, nn.Conv2d) and hasattr(mod, "weight"):
        out_c, in_per_group = mod.weight.shape[:2]
        depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
        if depthwise:
            mod.groups = out_c
        mod.out_channels, mod.in_channels = out_c, in_per_group * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        mod.num_features = mod.running_mean.shape[0] if mod.running_mean is not None else mod.weight.shape[0]
