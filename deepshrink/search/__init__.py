"""Target-driven search over per-layer compression choices: the space, the proxy that measures a
point without fine-tuning, and the walk and bisection over it (the command: pipelines/search.py)."""

from .proxy import Proxy
from .space import BITS_STEPS, KINDS, SPARSITY_STEPS, LayerChoice, compress_fields, describe, moves, start_point
from .walk import PathPoint, furthest_feasible, greedy_path

__all__ = ["Proxy", "LayerChoice", "SPARSITY_STEPS", "BITS_STEPS", "KINDS", "start_point", "moves",
           "compress_fields", "describe", "PathPoint", "greedy_path", "furthest_feasible"]
