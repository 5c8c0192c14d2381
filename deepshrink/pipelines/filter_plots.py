"""The plots of ``deepshrink filter-analysis`` (:mod:`.filter_analysis`), one per analysis, drawn from
the plain data each analysis returns; the panels follow Li et al. 2017, Figure 2.

Each figure is written atomically as PNG with matplotlib's Agg backend (no display); matplotlib
is imported only when a figure is drawn, so ``import deepshrink`` stays light.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..atomic import atomic_open

__all__ = ["plot_filter_sensitivity", "plot_filter_norms", "plot_greedy", "plot_selection", "plot_sorting",
           "PLOTTERS"]


@contextmanager
def _figure(path: str | os.PathLike, title: str, size=(6.0, 4.2)):
    """One axes; on leaving, the title, grid and legend are set and the PNG written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2 if len(ax.get_legend_handles_labels()[0]) > 8 else 1)
        fig.tight_layout()
        with atomic_open(path) as fh:
            fig.savefig(fh, format="png", dpi=110)
    finally:
        plt.close(fig)


def _pct(values) -> list[float]:
    return [v * 100 for v in values]


def _dense_line(ax, data: dict) -> None:
    ax.axhline(data["dense"] * 100, color="gray", lw=0.8, ls=":", label="unpruned")


def plot_filter_sensitivity(data: dict, path, retrained: bool = False) -> None:
    """One line per conv layer: validation accuracy vs the fraction of its filters removed (Fig. 2(b)/(c))."""
    key = "accuracy_retrained" if retrained else "accuracy"
    mode = f"retrained {data['retrain_epochs']} epoch(s)" if retrained else "without retraining"
    with _figure(path, f"Each layer pruned alone (smallest L1), {mode}") as ax:
        for name, rec in data["layers"].items():
            ax.plot(data["ratios"], _pct(rec[key]), marker="o", ms=3, label=f"{name} ({rec['channels']})")
        _dense_line(ax, data)
        ax.set_xlabel("fraction of the layer's filters removed")
        ax.set_ylabel("validation accuracy (%)")


def plot_filter_norms(data: dict, path) -> None:
    """Per conv layer, the filters' L1 norms sorted descending, divided by the largest (Fig. 2(a))."""
    with _figure(path, "Filters sorted by L1 norm (divided by the layer's largest)") as ax:
        for name, rec in data["layers"].items():
            ax.plot(range(len(rec["normalised"])), rec["normalised"], label=f"{name} ({rec['filters']})")
        ax.set_xlabel("filter index, sorted by L1 norm")
        ax.set_ylabel("L1 norm / largest")


def plot_greedy(data: dict, path) -> None:
    """All conv layers at once: independent vs greedy scoring of the next layer (section 3.2)."""
    with _figure(path, "All conv layers pruned: independent vs greedy scoring") as ax:
        ax.plot(data["ratios"], _pct(data["independent"]), marker="o", label="independent")
        ax.plot(data["ratios"], _pct(data["greedy"]), marker="s", label="greedy")
        _dense_line(ax, data)
        ax.set_xlabel("fraction of each layer's filters removed")
        ax.set_ylabel("validation accuracy (%), no retraining")


def plot_selection(data: dict, path) -> None:
    """All conv layers at once: smallest-L1 vs random vs largest-L1 filters removed."""
    with _figure(path, "Which filters go: smallest L1, random, largest L1") as ax:
        ax.plot(data["ratios"], _pct(data["smallest"]), marker="o", label="smallest L1")
        ax.plot(data["ratios"], _pct(data["random"]), marker="^",
                label=f"random (mean of {len(data['seeds'])} draws)")
        ax.plot(data["ratios"], _pct(data["largest"]), marker="s", label="largest L1")
        _dense_line(ax, data)
        ax.set_xlabel("fraction of each layer's filters removed")
        ax.set_ylabel("validation accuracy (%), no retraining")


def plot_sorting(data: dict, path) -> None:
    """The lab's experiment: keep the first k channels, with and without sorting them first."""
    with _figure(path, f"Keep the first k channels: sorted by importance ({data['criterion']}) or not") as ax:
        ax.plot(data["ratios"], _pct(data["unsorted"]), marker="o", label="unsorted")
        ax.plot(data["ratios"], _pct(data["sorted"]), marker="s", label="sorted")
        _dense_line(ax, data)
        ax.set_xlabel("fraction of each layer's channels removed")
        ax.set_ylabel("validation accuracy (%), no retraining")


PLOTTERS = {"sensitivity": plot_filter_sensitivity, "norms": plot_filter_norms, "greedy": plot_greedy,
            "selection": plot_selection, "sorting": plot_sorting}
