"""Pruning: fine-grained masks, sensitivity scans, schedules (one-shot, iterative, AGP); structured channel pruning."""

from .channel import SCOPES, ChannelResult, choose_channels, prune_channels, score_groups, sort_channels
from .channel_finetune import ChannelConfig, ChannelFinetuneResult, prune_channels_and_finetune
from .criteria import CRITERIA, get_criterion
from .cutters import CUTTERS, cutter_for
from .fine import RULES, compute_masks, global_magnitude_masks, magnitude_mask, prune_, random_mask, std_mask
from .finetune import SCHEDULES, PruneConfig, PruneResult, prune_and_finetune
from .graph import Group, Member, build_groups
from .masks import (MaskCallback, apply_masks, get_masks, layer_sparsities, prunable_weights, set_mask,
                    sparsity, squash)
from .plan import ChannelPlan, apply_plan, compose_plans, make_plan
from .regularize import adjust_dropout, penalized_loss, penalty, remove_dead_neurons
from .schedule import GradualPruner, agp_sparsity, iterative_sparsities
from .sensitivity import DEFAULT_GRID, choose_sparsities, plot_sensitivity, sensitivity_scan
from .trace import trace_model

__all__ = [
    "build_groups", "trace_model", "Group", "Member", "CUTTERS", "cutter_for", "CRITERIA", "get_criterion",
    "ChannelPlan", "make_plan", "apply_plan", "compose_plans", "score_groups", "choose_channels",
    "prune_channels", "sort_channels", "ChannelResult", "SCOPES",
    "ChannelConfig", "ChannelFinetuneResult", "prune_channels_and_finetune",
    "RULES", "SCHEDULES", "DEFAULT_GRID",
    "magnitude_mask", "random_mask", "std_mask", "global_magnitude_masks", "compute_masks", "prune_",
    "prunable_weights", "set_mask", "get_masks", "apply_masks", "squash", "MaskCallback",
    "sparsity", "layer_sparsities",
    "agp_sparsity", "iterative_sparsities", "GradualPruner",
    "penalty", "penalized_loss", "adjust_dropout", "remove_dead_neurons",
    "sensitivity_scan", "choose_sparsities", "plot_sensitivity",
    "PruneConfig", "PruneResult", "prune_and_finetune",
]
