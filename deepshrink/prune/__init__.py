"""Pruning: fine-grained masks, sensitivity scans, schedules (one-shot, iterative, AGP); structured channel pruning."""

from .channel import SCOPES, prune_channels, sort_channels
from .channel_finetune import ChannelConfig, prune_channels_and_finetune
from .criteria import CRITERIA
from .fine import RULES, prune_
from .finetune import SCHEDULES, PruneConfig, prune_and_finetune
from ..masks import get_masks, layer_sparsities, prunable_weights, remove, sparsity, squash
from .plan import ChannelPlan, apply_plan
from .sensitivity import DEFAULT_GRID, choose_sparsities, plot_sensitivity, sensitivity_scan

# What a user calls; the parts (graph, criteria, cutters, masks, schedules, regularisers) are
# imported from their own modules, e.g. ``from deepshrink.prune.graph import build_groups``.
__all__ = [
    "prune_", "PruneConfig", "prune_and_finetune", "sensitivity_scan", "choose_sparsities", "plot_sensitivity",
    "prune_channels", "prune_channels_and_finetune", "ChannelConfig", "ChannelPlan", "apply_plan", "sort_channels",
    "squash", "remove", "sparsity", "layer_sparsities", "get_masks", "prunable_weights",
    "RULES", "SCHEDULES", "DEFAULT_GRID", "CRITERIA", "SCOPES",
]
