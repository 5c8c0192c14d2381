"""Plots a person would rather look at than read: weight histograms, one panel per layer.

Every figure is written atomically as PNG with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from .atomic import atomic_open

__all__ = ["plot_weight_histograms"]


def plot_weight_histograms(model: nn.Module, path: str | os.PathLike, nonzero_only: bool = False,
                           bins: int = 128, title: str | None = None) -> None:
    """One histogram per conv/linear weight (all values, or only the nonzero ones)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [(n, p.detach().flatten()) for n, p in model.named_parameters() if p.dim() > 1]
    cols = min(3, max(1, len(weights)))
    rows = max(1, math.ceil(len(weights) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, w) in zip(axes.flat, weights):
        values = w[w != 0] if nonzero_only else w
        if values.numel():
            ax.hist(values.float().numpy(), bins=bins, density=True, color="tab:blue", alpha=0.6)
        zeros = 1.0 - int(torch.count_nonzero(w)) / max(1, w.numel())
        ax.set_title(f"{name}  ({zeros * 100:.1f}% zeros)", fontsize=9)
        ax.set_xlabel("weight")
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(weights):]:
        ax.axis("off")
    fig.suptitle(title or ("Nonzero weights" if nonzero_only else "All weights"))
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
