"""Layers that compute without multiplications: AdderNet (Chen et al. 2020).

``AdderConv2d`` / ``AdderLinear`` (L1-distance similarity, full-precision and HardTanh
gradients, chunked), the per-layer adaptive learning rate, and ``layer_stats`` (per-layer
output variance and weight-gradient norms, the homework's table). Nothing runs at import time.
"""

from .adaptive import adaptive_lr_hooks, adaptive_scale
from .adder import DEFAULT_CHUNK, AdderConv2d, AdderLinear, adder_conv2d, adder_linear, adder_rows
from .analysis import LayerStat, fan_in, layer_stats, predicted_variance

__all__ = [
    "AdderConv2d", "AdderLinear", "adder_conv2d", "adder_linear", "adder_rows", "DEFAULT_CHUNK",
    "adaptive_scale", "adaptive_lr_hooks",
    "LayerStat", "layer_stats", "predicted_variance", "fan_in",
]
