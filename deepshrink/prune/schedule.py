"""Sparsity schedules, kept apart from the pruner (Distiller's lesson).

* one-shot: the final sparsity at once, then fine-tuning;
* iterative (Han et al. 2015): R rounds, each removing the same fraction k of the weights
  still left, so s_r = 1 - (1 - k)^r with k = 1 - (1 - s_f)^(1/R);
* AGP, automated gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"):
      s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,   t = t0, t0 + dt, ..., t0 + n dt
  updated every dt optimizer steps during training: fast at first, slowly at the end.

:class:`GradualPruner` is a ``fit`` callback: it re-prunes by magnitude at each AGP update and
re-applies the masks after every step in between.
"""

from __future__ import annotations

from typing import Mapping

from torch import nn

from ..errors import ConfigError
from .fine import compute_masks
from ..masks import apply_masks, set_mask

__all__ = ["agp_sparsity", "iterative_sparsities", "GradualPruner"]


def agp_sparsity(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Target sparsity at step ``t`` (held constant between updates, s_f after the last)."""
    if n < 1 or dt < 1:
        raise ConfigError(f"AGP needs n >= 1 and dt >= 1 (got n={n}, dt={dt})")
    k = min(n, (t - t0) // dt)  # updates done so far
    if k <= 0:  # before t0, and the formula's own value at t0 without its rounding error
        return s_i
    return s_f + (s_i - s_f) * (1.0 - k / n) ** 3


def iterative_sparsities(s_f: float, rounds: int) -> list[float]:
    """Per-round targets removing an equal fraction of the remaining weights each round."""
    if rounds < 1 or not 0 <= s_f < 1:
        raise ConfigError(f"need rounds >= 1 and final sparsity in [0, 1) (got {rounds}, {s_f})")
    keep = (1.0 - s_f) ** (1.0 / rounds)
    return [1.0 - keep ** r for r in range(1, rounds + 1)]


class GradualPruner:
    """AGP as a training callback, per layer: s_l(t) follows the cubic to s_f,l.

    ``final`` is one sparsity or {parameter name: sparsity}; ``n`` updates every ``dt``
    steps starting at ``t0``. Pruned weights are already zero, so they stay pruned.
    """

    def __init__(self, model: nn.Module, final: float | Mapping[str, float], t0: int, n: int, dt: int,
                 rule: str = "magnitude", scope: str = "layer", s_i: float = 0.0, *, include=(), exclude=()):
        self.final, self.t0, self.n, self.dt = final, t0, n, dt
        self.rule, self.scope, self.s_i = rule, scope, s_i
        self.include, self.exclude = include, exclude  # name globs (deepshrink.targets)
        self.current = -1.0
        agp_sparsity(t0, s_i, 0.0, t0, n, dt)  # validate n, dt
        self._update(model, 0)

    def _targets(self, t: int):
        if isinstance(self.final, Mapping):
            return {k: agp_sparsity(t, min(self.s_i, v), v, self.t0, self.n, self.dt) for k, v in self.final.items()}
        return agp_sparsity(t, self.s_i, self.final, self.t0, self.n, self.dt)

    def _update(self, model: nn.Module, t: int) -> None:
        targets = self._targets(t)
        key = sum(targets.values()) if isinstance(targets, dict) else targets
        if key == self.current:
            return
        self.current = key
        for name, mask in compute_masks(model, targets, self.rule, self.scope,
                                        include=self.include, exclude=self.exclude).items():
            set_mask(model, name, mask)

    def __call__(self, model: nn.Module, info) -> None:
        # masks first: the optimizer step just taken moved the pruned weights off zero, and a
        # re-pruning that ranked them by that new |w| could revive them
        apply_masks(model)
        if info.global_step >= self.t0 and (info.global_step - self.t0) % self.dt == 0:
            self._update(model, info.global_step)
