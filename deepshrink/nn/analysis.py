"""Per-layer output variance and weight-gradient norms of adder and convolution layers.

For zero-mean, independent Gaussian inputs X and weights W and a fan-in of k^2 C_in terms
(``fan_in``; in_features for a linear layer):

* convolution, Y = sum X W:           Var[Y] = fan_in * Var[X] * Var[W]
* adder,       Y = -sum |X - W|:      Var[Y] = fan_in * (1 - 2/pi) * (Var[X] + Var[W])
  since X - W ~ N(0, Var[X] + Var[W]) and |Z| of a centred Gaussian has variance
  (1 - 2/pi) Var[Z] (Chen et al. 2020, eq. 11).

With Var[W] = 1 / fan_in (variance-preserving) the convolution keeps Var[Y] = Var[X], while the
adder output variance is about 0.36 * fan_in * Var[X]: it grows with the fan-in instead of
being cancelled by the small weights. The BatchNorm after the layer divides by that
standard deviation, so the gradient reaching the weights shrinks by it (Chen et al. report
adder weight-gradient norms far below a CNN's);
the adaptive learning rate (:mod:`deepshrink.nn.adaptive`) undoes that per layer.

:func:`layer_stats` measures both on a batch: the output variance per channel over the batch
and positions, averaged over channels (the spread BatchNorm divides out), and the L2 norm of
each weight's gradient, raw and as the optimizer receives it (after the adaptive scale).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .adder import AdderConv2d, AdderLinear

__all__ = ["LayerStat", "layer_stats", "predicted_variance", "fan_in"]

LAYERS = (nn.Conv2d, nn.Linear, AdderConv2d, AdderLinear)


def predicted_variance(kind: str, fan_in: int, var_x: float, var_w: float) -> float:
    """Var[Y] for zero-mean independent Gaussian X and W: ``kind`` is "conv" or "adder"."""
    if kind == "adder":
        return fan_in * (1.0 - 2.0 / math.pi) * (var_x + var_w)
    return fan_in * var_x * var_w


def fan_in(m: nn.Module) -> int:
    """Terms summed per output: C_in / groups * k_h * k_w, or in_features."""
    if isinstance(m, (nn.Conv2d, AdderConv2d)):
        return m.in_channels // getattr(m, "groups", 1) * m.kernel_size[0] * m.kernel_size[1]
    return m.in_features


@dataclass
class LayerStat:
    name: str
    kind: str              # "conv" (multiplications) or "adder"
    fan_in: int
    weights: int           # k in the adaptive rate
    input_var: float       # over all input elements
    output_var: float      # per channel over batch and positions, averaged over channels
    predicted_var: float   # predicted_variance() at the measured input and weight variances
    grad_norm: float       # ||dL/dW||_2, the full-precision gradient
    update_norm: float     # what the optimizer receives: eta * sqrt(k) with the adaptive rate


def _channel_var(y: torch.Tensor) -> float:
    dims = [d for d in range(y.dim()) if d != 1] if y.dim() > 2 else [0]
    return float(y.detach().double().var(dim=dims, unbiased=False).mean())


def layer_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                train: bool = True) -> list[LayerStat]:
    """One :class:`LayerStat` per convolution, linear or adder layer, in execution order.

    Works on a copy of ``model`` (BatchNorm statistics and ``.grad`` are left alone), in
    training mode by default (BatchNorm with batch statistics, as in a training step).
    """
    net = copy.deepcopy(model).train(train)
    seen: dict[str, tuple[float, float]] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, LAYERS):
            def hook(mod, inp, out, name=name):
                if name not in seen:
                    seen[name] = (float(inp[0].detach().double().var(unbiased=False)), _channel_var(out))
            hooks.append(m.register_forward_hook(hook))
    etas = {m: m.eta for m in net.modules() if isinstance(m, (AdderConv2d, AdderLinear))}
    for m in etas:
        m.eta = None                                   # the raw gradient first
    try:
        loss = loss_fn(net(x), y)
    finally:
        for h in hooks:
            h.remove()
    mods = [(n, m) for n, m in net.named_modules() if n in seen]
    grads = torch.autograd.grad(loss, [m.weight for _, m in mods], allow_unused=True)
    rows = []
    for (name, m), g in zip(mods, grads):
        kind = "adder" if isinstance(m, (AdderConv2d, AdderLinear)) else "conv"
        var_x, var_y = seen[name]
        var_w = float(m.weight.detach().double().var(unbiased=False))
        gn = float(torch.linalg.vector_norm(g)) if g is not None else 0.0
        eta = etas.get(m)
        k = m.weight.numel()
        rows.append(LayerStat(name, kind, fan_in(m), k, var_x, var_y,
                              predicted_variance(kind, fan_in(m), var_x, var_w), gn,
                              eta * math.sqrt(k) if (eta is not None and gn > 0) else gn))
    return rows
