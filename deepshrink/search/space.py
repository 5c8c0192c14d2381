"""What target-driven search chooses, per layer: sparsity, bit width and codebook kind.

A point of the search space gives every Conv/Linear weight of the model a :class:`LayerChoice`:

* ``sparsity`` from :data:`SPARSITY_STEPS` (the pruning targets only: the output layer, as in
  fine-grained pruning, keeps every weight), or any value between them where a walk starts
  from a model already pruned (its next step is then the next one on the grid);
* ``bits`` of its shared-weight codebook, from 8 down to 2 (:data:`BITS_STEPS`);
* ``kind``: ``kmeans`` (Lloyd's iterations from a linear start, Han et al. 2016) or ``linear``
  (2^b evenly spaced values over the weights' range, no iterations).

A move (:func:`moves`) changes one layer by one notch - the next sparsity step, or one bit
fewer in either kind - so a walk through the space is a sequence of small, comparable steps.
:func:`compress_fields` turns a point into the :class:`~deepshrink.compress.CompressConfig`
fields that the Deep Compression pipeline fine-tunes it with (per-layer sparsity map, bits and
linear codebooks), and that a recipe's ``compress`` step replays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["LayerChoice", "Point", "SPARSITY_STEPS", "BITS_STEPS", "KINDS", "start_point", "moves",
           "compress_fields", "describe"]

SPARSITY_STEPS = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
BITS_STEPS = (8, 7, 6, 5, 4, 3, 2)
KINDS = ("kmeans", "linear")


@dataclass(frozen=True)
class LayerChoice:
    sparsity: float = 0.0
    bits: int = 8
    kind: str = "kmeans"


Point = tuple[tuple[str, LayerChoice], ...]     # ((weight name, choice), ...) in the model's order


def start_point(layers: list[str]) -> Point:
    """Every layer dense, 8-bit k-means: the walk's first point."""
    return tuple((name, LayerChoice()) for name in layers)


def _next(steps: tuple, value, lower: bool = False) -> object | None:
    """The next step past ``value`` (which may lie between steps): the smallest step above it, or
    with ``lower`` the largest below it; None past the last."""
    later = [v for v in steps if (v < value if lower else v > value + 1e-9)]
    return (max(later) if lower else min(later)) if later else None


def moves(point: Point, prunable: set[str]) -> list[tuple[str, str, Point]]:
    """Every one-notch move from ``point``: ``(layer, what, new point)`` with ``what`` like
    ``"sparsity 0.9"`` or ``"bits 4 linear"``; sparsity moves only for ``prunable`` layers."""
    out = []
    for i, (name, c) in enumerate(point):
        options = []
        s = _next(SPARSITY_STEPS, c.sparsity) if name in prunable else None
        if s is not None:
            options.append((f"sparsity {s:g}", replace(c, sparsity=s)))
        b = _next(BITS_STEPS, c.bits, lower=True)
        if b is not None:
            options += [(f"bits {b} {k}", LayerChoice(c.sparsity, b, k)) for k in KINDS]
        for what, new in options:
            out.append((name, what, point[:i] + ((name, new),) + point[i + 1:]))
    return out


def _layer(weight_name: str) -> str:
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name


def compress_fields(point: Point) -> dict:
    """The CompressConfig fields that fine-tune ``point``: ``layer_sparsity`` (pruned layers
    only), ``bits`` per layer and ``linear_codebooks``."""
    return {"layer_sparsity": {_layer(n): c.sparsity for n, c in point if c.sparsity > 0},
            "bits": {_layer(n): c.bits for n, c in point},
            "linear_codebooks": tuple(_layer(n) for n, c in point if c.kind == "linear")}


def describe(point: Point) -> str:
    """One line: ``fc1 95% 3b, fc2 90% 4b linear, ...``."""
    return ", ".join(f"{_layer(n)} {c.sparsity:.0%} {c.bits}b" + (" linear" if c.kind == "linear" else "")
                     for n, c in point)
