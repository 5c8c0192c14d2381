"""Per-layer pruning targets given by hand: a sparsity map, or a threshold of ``s`` standard deviations.

The competition write-up in ``shared/seeds/`` prunes each layer with the threshold

    t_l = s x m_l x std(W_l)

(every weight with ``|w| < t_l`` goes): one global sensitivity ``s``, a multiplier ``m_l`` per
layer (default 1) where a layer needs more or less, and the layer's own spread, so that a wide
and a narrow layer are cut alike. For weights near a zero-mean normal distribution ``s = 1``
removes about 68% of a layer, ``s = 2`` about 95%. Han et al. (2015) describe the same
"quality parameter times standard deviation" rule.

:func:`std_threshold_sparsities` turns such thresholds into the fraction of each weight they
remove: the per-layer sparsity map that :class:`~deepshrink.prune.PruneConfig` and
:class:`~deepshrink.compress.CompressConfig` take (``{parameter name: sparsity}``), so that
magnitude pruning then removes exactly those weights (ties at the threshold aside) and every
schedule, AGP included, can aim at it. :func:`parse_layer_values` reads the command line's
``NAME=VALUE,...`` lists, checking each name against the model.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from ..errors import ConfigError

__all__ = ["std_threshold_sparsities", "parse_layer_values", "check_sparsity_map", "resolve_layer_names"]


def resolve_layer_names(values: Mapping[str, float], weights: Mapping[str, torch.Tensor],
                        what: str) -> dict[str, float]:
    """``values`` keyed by the weights' parameter names: a layer's name (``fc1``) stands for its
    weight (``fc1.weight``). An unknown name is a ConfigError listing the names there are."""
    out = {}
    for name, v in values.items():
        key = name if name in weights else f"{name}.weight"
        if key not in weights:
            raise ConfigError(f"{what}: no prunable weight {name!r}; the weights are: {', '.join(weights)}")
        out[key] = v
    return out


def check_sparsity_map(values: Mapping[str, float], what: str = "sparsity map") -> None:
    for name, s in values.items():
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s < 1:
            raise ConfigError(f"{what}: sparsity of {name!r} must be a number in [0, 1), got {s!r}")


def std_threshold_sparsities(weights: Mapping[str, torch.Tensor], s: float,
                             scale: Mapping[str, float] | None = None) -> dict[str, float]:
    """{parameter name: the fraction of its entries with |w| < s * scale[name] * std(w)}.

    ``weights``: {parameter name: weight tensor}; ``scale``: per-layer multipliers (names as in
    ``weights``, or a layer's name for its weight), 1 where absent."""
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
        raise ConfigError(f"threshold sensitivity s must be a finite number >= 0, got {s!r}")
    scale = resolve_layer_names(scale or {}, weights, "threshold scale")
    for name, m in scale.items():
        if not (isinstance(m, (int, float)) and math.isfinite(m) and m >= 0):
            raise ConfigError(f"threshold scale of {name!r} must be a finite number >= 0, got {m!r}")
    out = {}
    for name, w in weights.items():
        flat = w.detach().reshape(-1).double()                 # (n,)
        std = flat.std().item() if flat.numel() > 1 else 0.0
        t = s * scale.get(name, 1.0) * std
        removed = (flat.abs() < t).double().mean().item()
        out[name] = min(removed, 1.0 - 1.0 / max(flat.numel(), 1))   # at least one weight stays
    return out


def parse_layer_values(text: str | None, what: str) -> dict[str, float]:
    """``"fc1=0.9,conv2=0.5"`` -> ``{"fc1": 0.9, "conv2": 0.5}``; None or "" -> {}."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{what}: expected NAME=VALUE items separated by commas, got {item.strip()!r}")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"{what}: {name.strip()!r} has {value!r}, not a number") from None
        if not math.isfinite(v):
            raise ConfigError(f"{what}: {name.strip()!r} has {value!r}, not a finite number")
        if name.strip() in out:
            raise ConfigError(f"{what}: {name.strip()!r} is given twice")
        out[name.strip()] = v
    return out
