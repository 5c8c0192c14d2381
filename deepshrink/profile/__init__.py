"""Measure what a model costs: parameters, MACs, memory accesses, bits, latency, size."""

from .counts import COUNTERS, LayerCost
from .formulas import BlockCost, depthwise, inverted_bottleneck, pointwise, regular, separable_fused
from .latency import LatencyStats, compare_latency, measure_latency
from .profiler import LayerRow, Profile, profile_model, weight_bits
from .size import ModelSize, model_size

__all__ = [
    "COUNTERS", "LayerCost", "LayerRow", "Profile", "profile_model", "weight_bits",
    "BlockCost", "regular", "depthwise", "pointwise", "separable_fused", "inverted_bottleneck",
    "LatencyStats", "measure_latency", "compare_latency", "ModelSize", "model_size",
]
