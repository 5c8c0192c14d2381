"""The accuracy vs average-MACs curve of each exit policy, as a PNG (matplotlib's Agg backend),
written atomically; the original model is one point, the chosen setting is circled."""

from __future__ import annotations

import os

from ..atomic import atomic_open

__all__ = ["plot_curves"]


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: str | os.PathLike, *, original: tuple[float, float],
                chosen: tuple[float, float] | None = None, unit: str = "MACs", split: str = "validation",
                title: str | None = None) -> None:
    """``curves``: policy -> [(average cost per sample, accuracy in [0, 1]), ...]; ``original``: (cost,
    accuracy) of the model without exits; ``unit``: "MACs" (plotted in millions) or "ms"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, label = (1e6, "average MMACs per sample") if unit == "MACs" else (1.0, f"average {unit} per sample")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        pts = sorted(points)
        ax.plot([m / scale for m, _ in pts], [a * 100 for _, a in pts], marker="o", markersize=3, label=name)
    ax.scatter([original[0] / scale], [original[1] * 100], color="black", marker="*", s=90, zorder=5,
               label="original model")
    if chosen is not None:
        ax.scatter([chosen[0] / scale], [chosen[1] * 100], facecolors="none", edgecolors="red", s=160, zorder=6,
                   label="chosen")
    ax.set_xlabel(label)
    ax.set_ylabel(f"accuracy on the {split} split (%)")
    ax.set_title(title or f"Early exit: accuracy vs average {unit}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
