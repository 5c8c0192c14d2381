"""Sensitivity scan and automatic per-layer sparsities (Han et al. 2015; Li et al. 2017).

The scan prunes one layer at a time to each sparsity of a grid, evaluates, and restores the
layer: a plain nested dict comes back. ``choose_sparsities`` then picks per-layer sparsities
for a target total sparsity or an accuracy budget, weighting by parameter count:

    start with every layer dense; repeatedly take the step (layer l to its next grid
    sparsity) of lowest cost  = (accuracy drop added) / (parameters removed),
    until the total sparsity  sum_l s_l n_l / sum_l n_l  reaches the target
    (the last step is interpolated to land on it exactly), or the next step would push the
    sum of the layers' individual drops past the budget.

Large, insensitive layers are pruned hard; small sensitive ones (the first conv) stay dense,
chosen by the tool rather than by hand. Summing individual drops is an
approximation (drops interact); the fine-tuning that follows recovers most of it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from .fine import compute_masks
from ..targets import candidate_weights, prunable_weights

__all__ = ["DEFAULT_GRID", "sensitivity_scan", "choose_sparsities", "plot_sensitivity"]

DEFAULT_GRID = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@torch.no_grad()
def sensitivity_scan(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    sparsities: Sequence[float] = DEFAULT_GRID,
    layers: Sequence[str] | None = None,
    rule: str = "magnitude",
    progress: bool = True,
    *,
    include=(),
    exclude=(),
) -> dict:
    """{"dense": acc, "sparsities": [...], "layers": {name: {"params": n, "accuracy": [...]}}}.

    Scans ``layers`` (any weights of 2+ dimensions, by name), else the pruning targets: the
    Linear/Conv weights but the output layer's, with ``include`` / ``exclude`` name globs
    (:mod:`deepshrink.targets`), so the scan covers exactly what ``prune_`` would prune."""
    if layers is not None and (include or exclude):
        raise ConfigError("give the layers to scan or include/exclude globs, not both")
    grid = sorted(float(s) for s in sparsities)
    if not grid or grid[0] < 0 or grid[-1] > 1:
        raise ConfigError(f"sparsity grid must be non-empty and within [0, 1], got {list(sparsities)}")
    weights = candidate_weights(model) if layers is not None else prunable_weights(model, include, exclude)
    names = list(layers) if layers is not None else list(weights)
    if not names:
        raise ConfigError("no weights to scan: the model has no Linear/Conv weights besides its output layer"
                          + (" after the include/exclude globs" if include or exclude else ""))
    for n in names:
        if n not in weights:
            raise ConfigError(f"no prunable layer named {n!r}; layers: {', '.join(weights)}")
    result = {"dense": float(evaluate_fn(model)), "sparsities": grid, "rule": rule, "layers": {}}
    bar = tqdm(total=len(names) * len(grid), desc="sensitivity scan", disable=not progress, leave=False)
    for name in names:
        w = weights[name]
        saved = w.detach().clone()
        accs = []
        for s in grid:
            mask = compute_masks(model, {name: s}, rule=rule)[name]
            w.mul_(mask)
            accs.append(float(evaluate_fn(model)))
            w.copy_(saved)
            bar.update(1)
            bar.set_postfix(layer=name, s=s)
        result["layers"][name] = {"params": int(w.numel()), "accuracy": accs}
    bar.close()
    return result


def choose_sparsities(scan: dict, target_sparsity: float | None = None,
                      max_drop: float | None = None) -> dict[str, float]:
    """Per-layer sparsities from a scan (see module docstring). ``max_drop`` is in accuracy
    units of the scan (fractions if the evaluation returned fractions)."""
    if target_sparsity is None and max_drop is None:
        raise ConfigError("give a target sparsity, an accuracy budget, or both")
    if target_sparsity is not None and not 0 <= target_sparsity <= 1:
        raise ConfigError(f"target sparsity must be in [0, 1], got {target_sparsity}")
    dense, grid = scan["dense"], [0.0] + list(scan["sparsities"])
    layers = scan["layers"]
    total = sum(v["params"] for v in layers.values())
    drops = {}
    for name, v in layers.items():  # cumulative max: more sparsity never costs less
        d, running = [0.0], 0.0
        for a in v["accuracy"]:
            running = max(running, dense - a)
            d.append(running)
        drops[name] = d
    level = {n: 0 for n in layers}
    pruned, spent = 0.0, 0.0
    goal = None if target_sparsity is None else target_sparsity * total
    while goal is None or pruned < goal - 1e-9:
        best = None
        for n, i in level.items():
            if i + 1 >= len(grid):
                continue
            gain = layers[n]["params"] * (grid[i + 1] - grid[i])
            cost = drops[n][i + 1] - drops[n][i]
            key = (cost / gain if gain else float("inf"), -gain)
            if best is None or key < best[0]:
                best = (key, n, gain, cost)
        if best is None:
            if goal is not None:
                raise ConfigError(f"target sparsity {target_sparsity} is beyond the scan grid "
                                  f"(max {grid[-1]}): scan higher sparsities")
            break
        _, n, gain, cost = best
        if max_drop is not None and spent + cost > max_drop:
            break
        if goal is not None and pruned + gain > goal:  # land exactly on the target
            i = level[n]
            frac = (goal - pruned) / gain
            out = {m: grid[j] for m, j in level.items()}
            out[n] = grid[i] + frac * (grid[i + 1] - grid[i])
            return out
        level[n] += 1
        pruned += gain
        spent += cost
    return {n: grid[i] for n, i in level.items()}


def plot_sensitivity(scan: dict, path, max_drop: float | None = None, title: str = "Sensitivity scan") -> None:
    """One curve per layer, accuracy vs sparsity, with the accuracy-budget line (the scan's
    ``metric``, e.g. the mean cosine to the original on text, in place of accuracy when it names one)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_open

    names = list(scan["layers"])
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    dense = scan["dense"]
    budget = dense - max_drop if max_drop is not None else None
    for ax, name in zip(axes.flat, names):
        acc = [a * 100 for a in scan["layers"][name]["accuracy"]]
        ax.plot(scan["sparsities"], acc, marker="o", label="pruned alone")
        ax.axhline(dense * 100, color="gray", lw=0.8, ls=":", label="dense")
        if budget is not None:
            ax.axhline(budget * 100, color="red", lw=1, ls="--", label=f"budget (-{max_drop * 100:.1f} pp)")
        ax.set_title(f"{name} ({scan['layers'][name]['params']:,} params)", fontsize=9)
        ax.set_xlabel("sparsity")
        ax.set_ylabel(f"{scan.get('metric', 'accuracy')} (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
