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

Taking the fewest bits that pass a noisy check picks, among the widths, the ones whose error the
validation images happened to hide: a winner's curse. On 5,000 images one image is 0.02 pp, and a
2-bit layer that flips 50 predictions each way "costs nothing" there; on LeNet-300 the widths
chosen so gained 0.14 pp on validation and lost 0.35 on the test split (benchmarks/
compression_frontier.py, the parts table). With per-sample scores
(``samples``) a width passes only when the drop plus ``z`` paired standard errors stays within the
tolerance: ``max(mean(d), 0) + z * std(d) / sqrt(N) <= tolerance`` with ``d = reference - trial``
per sample, so a width that moves many predictions must show a small drop with confidence, while
one that moves none passes as before. A measured *gain* counts as no change, not as credit: at 2
bits LeNet-300's fc1 gained 0.22 pp on validation and lost 0.17 on test (seed 0), and k-means
noise that improves a trained model is the validation images' luck, not the layer's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .kmeans import KMeansConfig, kmeans_quantize_

__all__ = ["BitChoice", "CANDIDATE_BITS", "shared_layers", "choose_bits", "paired_drop"]

CANDIDATE_BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass
class BitChoice:
    """The chosen widths and what they were chosen from (scores on the validation split)."""

    bits: dict[str, int]                       # {layer or parameter name: bits}
    reference: float                           # the score with no layer shared
    scores: dict[str, dict[int, float]] = field(default_factory=dict)   # {layer: {bits: score}} as measured
    tolerance: float = 0.0
    errors: dict[str, dict[int, float]] = field(default_factory=dict)   # {layer: {bits: paired standard error}}
    z: float = 0.0                             # standard errors added to each drop before the tolerance

    def to_dict(self) -> dict:
        return {"bits": dict(self.bits), "reference": self.reference, "tolerance": self.tolerance, "z": self.z,
                "scores": {k: {str(b): s for b, s in v.items()} for k, v in self.scores.items()},
                "errors": {k: {str(b): e for b, e in v.items()} for k, v in self.errors.items()}}


def paired_drop(reference: torch.Tensor, trial: torch.Tensor) -> tuple[float, float]:
    """(mean drop, its standard error) of ``trial``'s per-sample scores (N,) against ``reference``'s
    on the same samples: ``d = reference - trial``, ``mean(d)`` and ``std(d) / sqrt(N)`` (0 for N < 2)."""
    if reference.shape != trial.shape or reference.dim() != 1 or len(reference) == 0:
        raise ConfigError(f"per-sample scores must be two equal non-empty vectors, got {list(reference.shape)} "
                          f"and {list(trial.shape)}")
    d = reference.to(torch.float64) - trial.to(torch.float64)
    se = d.std().item() / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return d.mean().item(), se


def shared_layers(model: nn.Module, cfg: KMeansConfig) -> list[str]:
    """The names :func:`kmeans_quantize_` would share under ``cfg`` (layer names for weights), in
    model order; found on a copy, so ``model`` is untouched."""
    return list(kmeans_quantize_(copy.deepcopy(model), replace(cfg, iters=0)))


def choose_bits(model: nn.Module, score: Callable[[nn.Module], float], cfg: KMeansConfig,
                tolerance: float, candidates: tuple[int, ...] = CANDIDATE_BITS,
                fixed: dict[str, int] | None = None, known: BitChoice | None = None,
                samples: Callable[[nn.Module], torch.Tensor] | None = None, z: float = 0.0) -> BitChoice:
    """The fewest bits per shared layer whose score stays within ``tolerance`` (in score units,
    e.g. 0.001 = 0.1 pp of accuracy) of the unshared ``model``'s, each layer measured alone.

    ``cfg``: which tensors are shared and how (iterations, codebook dtype, linear codebooks); its
    widths only pick the layers. ``fixed``: {layer: bits} given by the user, kept and not
    measured. ``score(model)`` is evaluated on data the choice may see (a validation split).
    ``known``: an earlier choice on the same model with the same ``score`` and ``cfg`` (say at a
    larger tolerance); its reference and measured widths are reused, not measured again (k-means
    and the score are deterministic). ``samples(model)``: the per-sample scores (N,) whose mean is
    ``score(model)``; with them a width passes when its drop (a gain counts as 0) plus ``z`` paired
    standard errors is within ``tolerance`` (module docstring), and ``score`` is not called. ``model`` is not modified.
    """
    cand = sorted(set(candidates))
    if not cand or any(not isinstance(b, int) or not 1 <= b <= 8 for b in cand):
        raise ConfigError(f"candidate bit widths must be integers in 1..8, got {candidates!r}")
    if not tolerance >= 0:
        raise ConfigError(f"bit-width tolerance must be >= 0, got {tolerance}")
    if not (math.isfinite(z) and z >= 0):
        raise ConfigError(f"the standard errors added to a drop must be a number >= 0, got {z}")
    fixed = dict(fixed or {})
    layers = shared_layers(model, cfg)
    ref_samples = None
    if known is not None:
        reference = known.reference
    elif samples is not None:
        ref_samples = samples(model)
        reference = ref_samples.to(torch.float64).mean().item()
    else:
        reference = score(model)
    chosen, scores, errors = {}, {}, {}
    for layer in layers:
        if layer in fixed:
            chosen[layer] = fixed[layer]
            continue
        scores[layer], errors[layer] = {}, {}
        chosen[layer] = cand[-1]
        seen = known.scores.get(layer, {}) if known is not None else {}
        seen_err = known.errors.get(layer, {}) if known is not None else {}
        for b in cand:
            if b in seen:
                s, se = seen[b], seen_err.get(b, 0.0)
            else:
                trial = copy.deepcopy(model)
                kmeans_quantize_(trial, replace(cfg, conv_bits=0, fc_bits=0, embedding_bits=0, include=[],
                                                bits={layer: b}))
                if samples is None:
                    s, se = score(trial), 0.0
                else:
                    ref_samples = samples(model) if ref_samples is None else ref_samples
                    drop, se = paired_drop(ref_samples, samples(trial))
                    s = reference - drop
            scores[layer][b] = s
            if samples is not None:
                errors[layer][b] = se
            if max(reference - s, 0.0) + z * se <= tolerance:
                chosen[layer] = b
                break
    return BitChoice(chosen, reference, scores, tolerance, errors if samples is not None else {},
                     z if samples is not None else 0.0)
