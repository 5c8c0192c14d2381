"""Activation smoothing for dynamic int8 linear layers (SmoothQuant: Xiao et al., ICML 2023).

A transformer's linear inputs carry a few channels with outliers tens of times larger than the
rest; one scale per token (row) then spends the int8 grid on those channels and rounds the others
coarsely. SmoothQuant moves part of that range into the weight, which quantizes per output
channel and tolerates it: for a layer y = x W^T with input channels j,

    s_j = max|x_j|^alpha / max_c |W[c, j]|^(1 - alpha)          (one factor per input channel)
    y  = (x / s) (W * s)^T                                       (exact in real arithmetic)

with max|x_j| measured on calibration inputs. ``alpha`` (0.5 in the paper) says how much of the
difficulty moves: 0 leaves the activations alone, 1 flattens them completely onto the weight.
The paper folds 1/s into the preceding LayerNorm; module swap has no graph to fold through, so the
twin keeps s as a buffer (``input_smooth``, shape (K,)) and divides its input by it at run time,
one elementwise pass over (M, K) beside an (M, K) x (K, N) product.

:func:`input_ranges` measures max|x_j| of named linear layers with forward hooks;
:func:`smooth_factors` is the formula.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ModelError

__all__ = ["smooth_factors", "input_ranges", "SMOOTH"]

SMOOTH = "input_smooth"        # the buffer name a smoothed twin holds


def smooth_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors s (K,) from max|x_j| (K,) and a weight (N, K).

    Channels that never fired (max |x_j| = 0) or whose weight column is zero keep s_j = 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"smoothing alpha must be in [0, 1], got {alpha!r}")
    a = act_absmax.detach().float()
    w = weight.detach().float().abs().amax(0)                  # (K,) max over output channels
    if a.shape != w.shape:
        raise ModelError(f"smoothing: {a.numel()} input ranges for a weight with {w.numel()} input channels")
    s = a.pow(alpha) / w.pow(1.0 - alpha)
    ok = (a > 0) & (w > 0) & torch.isfinite(s)
    return torch.where(ok, s, torch.ones_like(s)).clamp(1e-4, 1e4)


@torch.no_grad()
def input_ranges(model: nn.Module, names: list[str], batches) -> dict[str, torch.Tensor]:
    """{name: max |x_j| (K,)} over every row of every input the linear layers ``names`` see while
    ``model`` runs on ``batches`` (an iterable of inputs); layers that never ran are left out."""
    ranges: dict[str, torch.Tensor] = {}
    hooks = []

    def watch(name: str):
        def hook(_module, args, _out):
            x = args[0].detach()
            m = x.abs().reshape(-1, x.shape[-1]).amax(0).float()
            ranges[name] = torch.maximum(ranges[name], m) if name in ranges else m
        return hook

    for name in names:
        hooks.append(model.get_submodule(name).register_forward_hook(watch(name)))
    try:
        was = model.training
        model.eval()
        seen = 0
        for xb in batches:
            model(xb)
            seen += len(xb)
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    if seen == 0:
        raise ModelError("smoothing calibration needs at least one input")
    return ranges                  # a layer the forward pass never reached is absent
