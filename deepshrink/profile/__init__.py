"""Measure what a model costs: parameters, MACs, memory accesses, bits, latency, size."""

from .latency import compare_latency, measure_latency
from .profiler import profile_model
from .size import model_size

# What a user calls; the counter registry (``deepshrink.profile.counts.COUNTERS``) and the
# closed-form block costs (``deepshrink.profile.formulas``) are imported from their own modules.
__all__ = ["profile_model", "measure_latency", "compare_latency", "model_size"]
