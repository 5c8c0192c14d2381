"""Layers that compute without multiplications: AdderNet (Chen et al. 2020).

``AdderConv2d`` / ``AdderLinear`` (L1-distance similarity, full-precision and HardTanh
gradients, chunked), the per-layer adaptive learning rate, and ``layer_stats`` (per-layer
output variance and weight-gradient norms, adder against convolution). Nothing runs at import time.
"""

from .adaptive import adaptive_lr_hooks
from .adder import AdderConv2d, AdderLinear
from .analysis import layer_stats

# What a user calls; the functional forms and the variance formulas are imported from their
# own modules (``deepshrink.nn.adder``, ``deepshrink.nn.analysis``).
__all__ = ["AdderConv2d", "AdderLinear", "adaptive_lr_hooks", "layer_stats"]
