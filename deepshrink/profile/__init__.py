"""Measure what a model costs: parameters, MACs, memory accesses, bits, latency, size."""

from .latency import compare_latency, measure_latency
from .profiler import profile_model
from .size import model_size

# What a user calls; the layer counter registry (``deepshrink.profile.counts.COUNTERS``), the
# operation cost rules (``deepshrink.profile.ops.OP_COUNTERS``), the result table
# (``deepshrink.profile.table.Profile``) and the closed-form block costs
# (``deepshrink.profile.formulas``) are imported from their own modules.
__all__ = ["profile_model", "measure_latency", "compare_latency", "model_size"]
