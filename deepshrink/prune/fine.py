"""Fine-grained (element-wise) pruning rules: pure functions from weights to masks.

* magnitude (Han et al. 2015): remove the ``round(n * s)`` weights of smallest
  |w|. A ``kthvalue`` threshold with ``|w| > thr`` would remove *every* weight tied with the
  threshold; here ties are broken by position (a stable sort), so the achieved sparsity is
  exactly ``round(n * s) / n``.
* std (Han et al. 2015): remove ``|w| < q * std(w)`` per layer, one quality
  parameter ``q`` for all layers. For a target total sparsity, ``q`` is found by bisection.
* random: ``round(n * s)`` positions drawn from a seeded generator.

Scope ``layer`` prunes each tensor to its own sparsity; ``global`` ranks all tensors together
(one threshold across layers), so the sensitive small layers keep more of their weights.

Importance is |w| throughout (Han et al. 2015, "Learning both Weights and Connections").
What is pruned: the Linear/Conv weights but the output layer's, adjusted by ``include`` /
``exclude`` name globs (:mod:`deepshrink.targets`); a per-layer map prunes exactly its names.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..masks import set_mask
from ..targets import candidate_weights, prunable_weights

__all__ = [
    "RULES",
    "magnitude_mask",
    "random_mask",
    "std_mask",
    "global_magnitude_masks",
    "std_masks_for_target",
    "compute_masks",
    "prune_",
]

RULES = ("magnitude", "std", "random")


def _check_sparsity(s: float, where: str = "sparsity") -> float:
    s = float(s)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"{where} must be in [0, 1], got {s}")
    return s


def _mask_without(flat_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping all but the ``k`` lowest scores (ties broken by position)."""
    mask = torch.ones_like(flat_scores, dtype=torch.bool)
    if k > 0:
        order = torch.argsort(flat_scores, stable=True)
        mask[order[:k]] = False
    return mask


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest-|w| entries; exactly ``round(numel * sparsity)`` zeros."""
    s = _check_sparsity(sparsity)
    k = round(w.numel() * s)
    return _mask_without(w.detach().abs().flatten(), k).view_as(w)


def random_mask(w: torch.Tensor, sparsity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    s = _check_sparsity(sparsity)
    k = round(w.numel() * s)
    mask = torch.ones(w.numel(), dtype=torch.bool)
    mask[torch.randperm(w.numel(), generator=generator)[:k]] = False
    return mask.view_as(w)


def std_mask(w: torch.Tensor, q: float) -> torch.Tensor:
    """Han's rule: keep ``|w| >= q * std(w)``."""
    if q < 0:
        raise ConfigError(f"the std rule's quality parameter must be >= 0, got {q}")
    w = w.detach()
    return w.abs() >= q * w.float().std()


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One ranking across all tensors: exactly ``round(N * s)`` zeros in total."""
    s = _check_sparsity(sparsity)
    names = list(weights)
    flat = torch.cat([weights[n].detach().abs().flatten() for n in names])
    mask = _mask_without(flat, round(flat.numel() * s))
    out, lo = {}, 0
    for n in names:
        size = weights[n].numel()
        out[n] = mask[lo:lo + size].view_as(weights[n])
        lo += size
    return out


def std_masks_for_target(weights: Mapping[str, torch.Tensor], sparsity: float,
                         iters: int = 60) -> tuple[dict[str, torch.Tensor], float]:
    """Bisection on Han's quality parameter ``q`` so the total sparsity reaches the target."""
    s = _check_sparsity(sparsity)
    total = sum(w.numel() for w in weights.values())

    def achieved(q: float) -> float:
        return sum(int((~std_mask(w, q)).sum()) for w in weights.values()) / total

    lo, hi = 0.0, 1.0
    while achieved(hi) < s and hi < 1e6:
        hi *= 2
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if achieved(mid) < s else (lo, mid)
    return {n: std_mask(w, hi) for n, w in weights.items()}, hi


def _targets(model: nn.Module, sparsity, include, exclude) -> dict[str, nn.Parameter]:
    """The weights to prune: :func:`~deepshrink.targets.prunable_weights` with the globs; with a
    per-layer map, exactly its names (naming a weight selects it, unless ``exclude`` matches it)."""
    if not isinstance(sparsity, Mapping):
        weights = prunable_weights(model, include, exclude)
        if not weights:
            raise ConfigError("no weights to prune: the model has no Linear/Conv weights besides its output layer"
                              + (" after the include/exclude globs" if include or exclude else "")
                              + "; add some with include globs")
        return weights
    candidates = candidate_weights(model)
    unknown = sorted(set(sparsity) - set(candidates))
    if unknown:
        raise ConfigError(f"no prunable layer named {unknown[0]!r}; layers: {', '.join(candidates)}")
    inc = (include,) if isinstance(include, str) else tuple(include or ())
    allowed = prunable_weights(model, inc + tuple(sparsity), exclude)
    for n in sparsity:
        if n not in allowed:
            raise ConfigError(f"layer {n!r} has a sparsity but is excluded (exclude globs: {exclude!r})")
    return {n: candidates[n] for n in sparsity}


def compute_masks(
    model: nn.Module,
    sparsity: float | Mapping[str, float],
    rule: str = "magnitude",
    scope: str = "layer",
    seed: int = 0,
    *,
    include=(),
    exclude=(),
) -> dict[str, torch.Tensor]:
    """Masks for the model's pruning targets (:mod:`deepshrink.targets`); nothing is changed.

    ``sparsity`` is one target for all targets, or {parameter name: sparsity} for the named
    weights only (per-layer scope; any weight of 2+ dimensions may be named). ``include`` /
    ``exclude``: name globs adding weights to the default targets / removing them.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if scope not in ("layer", "global"):
        raise ConfigError(f"scope must be 'layer' or 'global', got {scope!r}")
    weights = _targets(model, sparsity, include, exclude)
    if isinstance(sparsity, Mapping):
        if scope == "global":
            raise ConfigError("a per-layer sparsity map needs scope 'layer'")
        targets = {n: _check_sparsity(v, f"sparsity of {n}") for n, v in sparsity.items()}
    else:
        targets = {n: _check_sparsity(sparsity) for n in weights}
    chosen = {n: weights[n] for n in targets}
    if rule == "random":
        gen = torch.Generator().manual_seed(seed)
        if scope == "global":  # uniform random scores, ranked together across layers
            scores = {n: torch.rand(w.shape, generator=gen) for n, w in chosen.items()}
            return global_magnitude_masks(scores, next(iter(targets.values())))
        return {n: random_mask(w, targets[n], gen) for n, w in chosen.items()}
    if rule == "std":
        if isinstance(sparsity, Mapping) or scope == "layer":
            return {n: std_masks_for_target({n: w}, targets[n])[0][n] for n, w in chosen.items()}
        return std_masks_for_target(chosen, next(iter(targets.values())))[0]
    if scope == "global":
        return global_magnitude_masks(chosen, next(iter(targets.values())))
    return {n: magnitude_mask(w, targets[n]) for n, w in chosen.items()}


def prune_(model: nn.Module, sparsity: float | Mapping[str, float], rule: str = "magnitude",
           scope: str = "layer", seed: int = 0, *, include=(), exclude=()) -> dict[str, torch.Tensor]:
    """Prune in place: compute masks, attach them as buffers, zero the pruned weights.

    By default the Linear/Conv weights but the output layer's are pruned; ``include`` /
    ``exclude`` name globs add or remove weights (:mod:`deepshrink.targets`)."""
    masks = compute_masks(model, sparsity, rule, scope, seed, include=include, exclude=exclude)
    for name, mask in masks.items():
        set_mask(model, name, mask)
    return masks
