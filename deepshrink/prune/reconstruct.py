"""Pruning with weight reconstruction from calibration data: the Wanda mask (Sun et al. 2023)
and the least-squares compensation of Optimal Brain Surgeon (Hassibi & Stork 1993), solved
exactly per row as SparseGPT (Frantar & Alistarh 2023) approximates it column by column.

Magnitude pruning removes weights and leaves the survivors as they were. For a Linear layer
``y = W x`` with calibration inputs ``X`` (K, T) (one column per token), the error a pruned row
``w'`` makes on them is ``||X^T (w' - w)||^2 = (w' - w)^T H (w' - w)`` with ``H = X X^T`` (K, K).

* **Which weights go** (:func:`wanda_mask`): per output row, the ``round(K s)`` smallest
  ``|w_j| * ||x_j||`` (``||x_j||^2 = H_jj``): a weight on an input that is large on real data
  matters more than its magnitude says.
* **How the rest compensate** (:func:`reconstruct_weight`): the kept weights ``k`` of each row
  solve ``(H + lambda I)_kk w'_k = ((H + lambda I) w)_k``, the minimum of the error above plus
  ``lambda ||w' - w||^2``; ``lambda = damp * mean(diag H)`` keeps the system well posed when the
  calibration tokens do not span every input, and at sparsity 0 the weight is unchanged.
  SparseGPT's column sweep reaches this only approximately (it never revisits a column); the
  per-row solve costs ``N`` Cholesky factorisations of ``(K(1-s))^2``, seconds for a
  BERT-sized layer.
* :func:`input_hessians` accumulates ``X X^T`` of named Linear layers in one pass.
* :func:`reconstruct_prune_` prunes a model's targets in place, the layers in forward order,
  ``group`` at a time: each group's Hessians are measured with every layer before it already
  pruned (a transformer block's six Linears are one group, as in SparseGPT), and the masks are
  attached like :func:`~deepshrink.prune.fine.prune_`'s.

Only ``nn.Linear`` weights are reconstructed (a convolution's inputs would need unfolding);
other targets are refused. Inputs are ``(..., K)``: every leading position is one token.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from ..masks import set_mask
from .fine import _check_sparsity, _targets

__all__ = ["wanda_mask", "reconstruct_weight", "input_hessians", "reconstruct_prune_", "DAMP"]

DAMP = 0.01             # fraction of the mean diagonal added to H
ROWS_PER_SOLVE = 64     # rows per batched Cholesky solve (R m^2 float64 values at once) ...
SOLVE_BYTES = 256 << 20  # ... fewer when that batch would pass 256 MiB


def wanda_mask(weight: torch.Tensor, hessian_diag: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask (N, K) of Wanda (Sun et al. 2023): per output row, the ``round(K s)`` weights of
    smallest ``|w_ij| * ||x_j||`` go (``||x_j||^2`` is the Hessian's diagonal), ties by position."""
    n, k = weight.shape
    drop = round(k * sparsity)
    score = weight.detach().abs().to(torch.float64) * hessian_diag.to(torch.float64).clamp_min(0).sqrt()[None, :]
    keep = torch.ones(n, k, dtype=torch.bool, device=weight.device)
    if drop:
        keep.scatter_(1, score.argsort(dim=1, stable=True)[:, :drop], False)
    return keep


def reconstruct_weight(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, *,
                       cross: torch.Tensor | None = None, damp: float = DAMP,
                       rows_per_solve: int = ROWS_PER_SOLVE) -> tuple[torch.Tensor, torch.Tensor]:
    """One weight (N, K) pruned with ``hessian`` = X X^T (K, K): ``(new weight, keep mask)``.

    The mask is :func:`wanda_mask`'s (``round(K s)`` zeros per row). Each row's kept weights
    ``k`` are then the least-squares fit of the row's original output on the calibration tokens,
    damped towards the original weights: ``w'`` minimises ``||X^T (w' - w)||^2 + lambda ||w' - w||^2``
    with ``w'`` zero off the mask, i.e. ``(H + lambda I)_kk w'_k = ((H + lambda I) w)_k`` with
    ``lambda = damp * mean(diag H)`` (at sparsity 0, ``w' = w``): the exact compensation OBS
    approximates one weight at a time. With ``cross`` = X R^T, where ``R`` are the inputs the
    original model gives this layer on the same tokens, the row instead fits the original's output
    ``R^T w``: ``(H + lambda I)_kk w'_k = (C w + lambda w)_k``, so the errors of the layers before
    are corrected rather than carried. Computed in float64, ``rows_per_solve`` rows (same number
    of kept weights each) per batched Cholesky solve."""
    _check_sparsity(sparsity)
    n, k = weight.shape
    if hessian.shape != (k, k):
        raise ConfigError(f"hessian of shape {list(hessian.shape)} for a weight of {k} inputs")
    w = weight.detach().to(torch.float64)                              # (N, K)
    h = hessian.detach().to(device=w.device, dtype=torch.float64)
    keep = wanda_mask(w, torch.diagonal(h), sparsity)                  # (N, K)
    lam = damp * torch.diagonal(h).mean().clamp_min(1e-12)
    h = h + lam * torch.eye(k, dtype=h.dtype, device=h.device)
    if cross is None:
        target = w @ h                                                 # (N, K): row r is ((H + lambda I) w_r)^T
    else:
        if cross.shape != (k, k):
            raise ConfigError(f"cross term of shape {list(cross.shape)} for a weight of {k} inputs")
        target = w @ cross.detach().to(device=w.device, dtype=torch.float64).t() + lam * w  # (C w_r + lambda w_r)^T
    out = torch.zeros_like(w)
    kept = k - round(k * sparsity)
    if kept == 0:
        return out.to(weight.dtype), keep
    rows_per_solve = max(1, min(rows_per_solve, SOLVE_BYTES // (kept * kept * 8)))   # bound the (R, m, m) batch
    for lo in range(0, n, rows_per_solve):
        rows = slice(lo, min(lo + rows_per_solve, n))
        idx = keep[rows].nonzero()[:, 1].reshape(-1, kept)             # (R, m) kept inputs of each row
        hk = h[idx[:, :, None], idx[:, None, :]]                       # (R, m, m)
        rhs = torch.gather(target[rows], 1, idx)                       # (R, m)
        sol = torch.cholesky_solve(rhs[:, :, None], torch.linalg.cholesky(hk))[:, :, 0]
        out[rows] = out[rows].scatter(1, idx, sol)
    return out.to(weight.dtype), keep


@torch.no_grad()
def input_hessians(model: nn.Module, layers: Mapping[str, nn.Linear], x: torch.Tensor, batch_size: int = 256,
                   reference: nn.Module | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``({name: X X^T}, {name: X R^T})`` (K, K) float64 of each named Linear's inputs ``X`` over
    the calibration inputs ``x`` (N, ...), every token a column; ``R`` are the same layer's inputs
    in ``reference`` (a model of the same structure, e.g. the dense original) on the same samples
    (without one, ``R = X`` and both dicts are the same). One eval-mode pass of each model in
    batches, each batch's sum in float32, the running sums in float64. Every forward runs to its
    end: a model may call a layer several times per batch (an encoder runs its rows in groups), so
    stopping at the last layer needed would drop the later calls' tokens."""
    grams = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=m.weight.device)
             for name, m in layers.items()}
    cross = {name: torch.zeros_like(g) for name, g in grams.items()} if reference is not None else grams
    seen: dict[str, list[torch.Tensor]] = {}    # the reference's inputs of this batch, call by call, (tokens, K)

    def remember(name):
        def record(module, args):
            seen.setdefault(name, []).append(args[0].detach().reshape(-1, module.in_features).float())
        return record

    def accumulate(name):
        def record(module, args):
            rows = args[0].detach().reshape(-1, module.in_features).float()   # (tokens, K)
            grams[name] += (rows.t() @ rows).double()
            if reference is not None:
                theirs = seen[name].pop(0) if seen.get(name) else None   # the reference's call in the same place
                if theirs is None or theirs.shape != rows.shape:
                    raise ConfigError(f"{name}: the reference model's inputs do not pair with the model's "
                                      f"({None if theirs is None else list(theirs.shape)} vs {list(rows.shape)})")
                cross[name] += (rows.t() @ theirs).double()
        return record

    handles = [m.register_forward_pre_hook(accumulate(name)) for name, m in layers.items()]
    if reference is not None:
        ref_modules = dict(reference.named_modules())
        handles += [ref_modules[name].register_forward_pre_hook(remember(name)) for name in layers]
    modes = [(m, m.training) for m in (model, reference) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        for lo in range(0, len(x), batch_size):
            if reference is not None:
                reference(x[lo:lo + batch_size])
            model(x[lo:lo + batch_size])
            seen.clear()
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.train(mode)
    return grams, cross


def _linear_targets(model: nn.Module, sparsity, include, exclude) -> dict[str, tuple[str, nn.Linear]]:
    """``{weight name: (layer name, layer)}`` of the pruning targets (:func:`.fine._targets`: the
    default targets with the globs, or a per-layer map's names), all of which must be Linear."""
    modules = dict(model.named_modules())
    out = {}
    for pname in _targets(model, sparsity, include, exclude):
        layer_name, _, leaf = pname.rpartition(".")
        layer = modules.get(layer_name)
        if leaf != "weight" or not isinstance(layer, nn.Linear):
            raise ConfigError(f"{pname}: reconstruction prunes Linear weights only, and this is a "
                              f"{type(layer).__name__} parameter; exclude it or use the magnitude rule")
        out[pname] = (layer_name, layer)
    return out


def _forward_order(model: nn.Module, names: list[str], x: torch.Tensor) -> list[str]:
    """The layers in the order one forward call reaches them."""
    seen: list[str] = []
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: seen.append(n) if n not in seen else None)
               for n in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen + [n for n in names if n not in seen]


def reconstruct_prune_(model: nn.Module, sparsity: float | Mapping[str, float], x: torch.Tensor, *, include=(),
                       exclude=(), group: int = 6, batch_size: int = 256, correct: bool = False,
                       progress: bool = False) -> dict[str, torch.Tensor]:
    """Prune ``model``'s Linear targets to ``sparsity`` each (or ``{weight name: sparsity}``) with
    :func:`reconstruct_weight` on the calibration inputs ``x`` (N, ...); returns ``{weight name:
    keep mask}`` (also attached, as :func:`~deepshrink.prune.fine.prune_` does).

    Layers go in forward order, ``group`` at a time: one calibration pass measures the Hessians of
    the next group with every earlier layer already pruned (a transformer block's six Linears are
    one group), and each layer fits its own dense output on its (pruned) inputs, SparseGPT's
    target. With ``correct`` each layer fits instead the output the dense model (a copy taken now)
    gives on the same samples, which also undoes the errors of the layers before it; on
    all-MiniLM-L6-v2 at 50% (512 fortunes sentences) that gave a mean cosine of 0.897 to the
    original against 0.931 for the default, so it is not the default."""
    targets = _linear_targets(model, sparsity, include, exclude)
    level = {p: _check_sparsity(sparsity[p] if isinstance(sparsity, Mapping) else sparsity, f"sparsity of {p}")
             for p in targets}
    if len(x) == 0:
        raise ConfigError("reconstruction needs calibration inputs")
    by_layer = {layer_name: pname for pname, (layer_name, _) in targets.items()}
    order = _forward_order(model, list(by_layer), x)
    modules = dict(model.named_modules())
    reference = copy.deepcopy(model).eval() if correct else None
    masks: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(order), desc="reconstructing", disable=not progress, leave=False)
    for lo in range(0, len(order), group):
        chunk = order[lo:lo + group]
        grams, cross = input_hessians(model, {n: modules[n] for n in chunk}, x, batch_size, reference=reference)
        for layer_name in chunk:
            layer, pname = modules[layer_name], by_layer[layer_name]
            new, keep = reconstruct_weight(layer.weight, grams[layer_name], level[pname],
                                           cross=cross[layer_name] if correct else None)
            with torch.no_grad():
                layer.weight.copy_(new)
            set_mask(model, pname, keep)
            masks[pname] = keep
            bar.update(1)
    bar.close()
    return masks
