"""Pruning: fine-grained masks, sensitivity scans, schedules (one-shot, iterative, AGP)."""

from .fine import RULES, compute_masks, global_magnitude_masks, magnitude_mask, prune_, random_mask, std_mask
from .finetune import SCHEDULES, PruneConfig, PruneResult, prune_and_finetune
from .masks import (MaskCallback, apply_masks, get_masks, layer_sparsities, prunable_weights, set_mask,
                    sparsity, squash)
from .regularize import adjust_dropout, penalized_loss, penalty, remove_dead_neurons
from .schedule import GradualPruner, agp_sparsity, iterative_sparsities
from .sensitivity import DEFAULT_GRID, choose_sparsities, plot_sensitivity, sensitivity_scan

__all__ = [
    "RULES", "SCHEDULES", "DEFAULT_GRID",
    "magnitude_mask", "random_mask", "std_mask", "global_magnitude_masks", "compute_masks", "prune_",
    "prunable_weights", "set_mask", "get_masks", "apply_masks", "squash", "MaskCallback",
    "sparsity", "layer_sparsities",
    "agp_sparsity", "iterative_sparsities", "GradualPruner",
    "penalty", "penalized_loss", "adjust_dropout", "remove_dead_neurons",
    "sensitivity_scan", "choose_sparsities", "plot_sensitivity",
    "PruneConfig", "PruneResult", "prune_and_finetune",
]
