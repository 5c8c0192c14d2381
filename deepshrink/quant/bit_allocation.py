"""Per-layer bit widths for weight sharing, chosen by measured sensitivity.

Deep Compression gives every convolution one width and every fully connected layer another
(8 and 5 bits on LeNet). Layers differ far more than that: a 400k-weight fc layer pruned to 2%
may lose nothing at 2 bits while a 500-weight first convolution needs 6. Mixed-precision methods
estimate the sensitivity (HAWQ, Dong et al. 2019: the Hessian trace) or search for it (HAQ,
Wang et al. 2019); on a model small enough to evaluate a few dozen times it can simply be
measured, which is what this module does:

for each layer, in turn and alone (every other layer left in float), the nonzeros are k-means
shared at each candidate width from the smallest up, and the model is scored on the validation
split; the layer gets the fewest bits whose score stays within ``tolerance`` of the unshared
model's. The candidate widths are tried in increasing order and the first that fits ends the
layer's scan, so a layer that tolerates 2 bits costs one evaluation.

Widths are chosen one layer at a time, so the joint error can exceed any one layer's; the caller
measures the joint result (``compress`` does, after centroid fine-tuning, against its budget).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable

from torch import nn

from ..errors import ConfigError
from .kmeans import KMeansConfig, kmeans_quantize_

__all__ = ["BitChoice", "CANDIDATE_BITS", "shared_layers", "choose_bits"]

CANDIDATE_BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass
class BitChoice:
    """The chosen widths and what they were chosen from (scores on the validation split)."""

    bits: dict[str, int]                       # {layer or parameter name: bits}
    reference: float                           # the score with no layer shared
    scores: dict[str, dict[int, float]] = field(default_factory=dict)   # {layer: {bits: score}} as measured
    tolerance: float = 0.0

    def to_dict(self) -> dict:
        return {"bits": dict(self.bits), "reference": self.reference, "tolerance": self.tolerance,
                "scores": {k: {str(b): s for b, s in v.items()} for k, v in self.scores.items()}}


def shared_layers(model: nn.Module, cfg: KMeansConfig) -> list[str]:
    """The names :func:`kmeans_quantize_` would share under ``cfg`` (layer names for weights), in
    model order; found on a copy, so ``model`` is untouched."""
    return list(kmeans_quantize_(copy.deepcopy(model), replace(cfg, iters=0)))


def choose_bits(model: nn.Module, score: Callable[[nn.Module], float], cfg: KMeansConfig,
                tolerance: float, candidates: tuple[int, ...] = CANDIDATE_BITS,
                fixed: dict[str, int] | None = None, known: BitChoice | None = None) -> BitChoice:
    """The fewest bits per shared layer whose score stays within ``tolerance`` (in score units,
    e.g. 0.001 = 0.1 pp of accuracy) of the unshared ``model``'s, each layer measured alone.

    ``cfg``: which tensors are shared and how (iterations, codebook dtype, linear codebooks); its
    widths only pick the layers. ``fixed``: {layer: bits} given by the user, kept and not
    measured. ``score(model)`` is evaluated on data the choice may see (a validation split).
    ``known``: an earlier choice on the same model with the same ``score`` and ``cfg`` (say at a
    larger tolerance); its reference and measured widths are reused, not measured again (k-means
    and the score are deterministic). ``model`` is not modified.
    """
    cand = sorted(set(candidates))
    if not cand or any(not isinstance(b, int) or not 1 <= b <= 8 for b in cand):
        raise ConfigError(f"candidate bit widths must be integers in 1..8, got {candidates!r}")
    if not tolerance >= 0:
        raise ConfigError(f"bit-width tolerance must be >= 0, got {tolerance}")
    fixed = dict(fixed or {})
    layers = shared_layers(model, cfg)
    reference = known.reference if known is not None else score(model)
    chosen, scores = {}, {}
    for layer in layers:
        if layer in fixed:
            chosen[layer] = fixed[layer]
            continue
        scores[layer] = {}
        chosen[layer] = cand[-1]
        seen = known.scores.get(layer, {}) if known is not None else {}
        for b in cand:
            if b in seen:
                s = seen[b]
            else:
                trial = copy.deepcopy(model)
                kmeans_quantize_(trial, replace(cfg, conv_bits=0, fc_bits=0, embedding_bits=0, include=[],
                                                bits={layer: b}))
                s = score(trial)
            scores[layer][b] = s
            if reference - s <= tolerance:
                chosen[layer] = b
                break
    return BitChoice(chosen, reference, scores, tolerance)
