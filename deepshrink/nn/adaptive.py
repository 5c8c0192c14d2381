"""AdderNet's adaptive learning rate per layer (Chen et al. 2020, CVPR, eq. 12).

An adder layer's weight gradient is much smaller than a convolution's (the BatchNorm that
follows divides by an output standard deviation that grows with sqrt(k^2 C_in), see
docs/METHODS.md, "AdderNet"), and the ratio differs from layer to layer. The paper rescales
each layer's gradient to a fixed norm before the optimizer sees it:

    dW_l  <-  eta * sqrt(k_l) * dW_l / ||dW_l||_2,      k_l = number of weights in layer l,

so every layer's update has norm eta * sqrt(k_l) * lr (an RMS of eta * lr per weight), whatever
the layer's depth or fan-in; the global learning rate lr still anneals it.

Two ways to use it: ``AdderConv2d(..., eta=0.1)`` applies it inside the layer's backward (as
the authors' code does, so it travels with the model and survives copies), or
:func:`adaptive_lr_hooks` registers gradient hooks on any parameters (removable handles).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["adaptive_scale", "adaptive_lr_hooks"]

_EPS = 1e-12


def adaptive_scale(grad: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * sqrt(k) * grad / ||grad||_2 (k = grad.numel()); a zero gradient stays zero."""
    norm = torch.linalg.vector_norm(grad).clamp_min(_EPS)
    return grad * (eta * math.sqrt(grad.numel()) / norm)


def adaptive_lr_hooks(params: Iterable[torch.nn.Parameter], eta: float) -> list:
    """Rescale each parameter's gradient with :func:`adaptive_scale` as it is computed.

    Returns the hook handles (``h.remove()`` undoes it). For a parameter used more than once
    in a forward pass the hook sees the summed gradient, so the norm is the layer's.
    """
    return [p.register_hook(lambda g, eta=eta: adaptive_scale(g, eta)) for p in params]
