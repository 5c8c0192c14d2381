"""Training aids from Han et al. 2015 ("Learning both Weights and Connections", NeurIPS).

* L1 / L2 penalties on the weights being pruned, ``L = L_task + lambda * sum |w|^p``, push
  weights toward zero before pruning (L1) or keep them small during retraining (L2).
* Dropout adjustment for pruned layers: a layer keeping C_r of its C_o connections retrains
  with dropout D_r = D_o * sqrt(C_r / C_o) (the paper's Eq. 2).
* Dead neurons: a hidden unit of a Linear -> activation -> Linear chain whose outgoing
  weights are all zero is removed; one whose incoming weights are all zero emits the constant
  act(b_j), which is folded into the next layer's bias before the unit is removed. The layers
  physically shrink; the outputs are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers import sync_layer_sizes
from ..tracing import trace
from ..masks import MASK_SUFFIX, target_weights

__all__ = ["penalty", "penalized_loss", "adjust_dropout", "remove_dead_neurons"]

# modules that map 0 -> 0 elementwise (or are identities at inference): safe between layers
_PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.Tanh, nn.Hardtanh)


def penalty(model: nn.Module, kind: str) -> torch.Tensor:
    """sum |w| (l1) or sum w^2 (l2) over the pruning targets: the masked weights, else the default
    targets (:func:`deepshrink.masks.target_weights`), so an embedding is never pushed to zero."""
    weights = list(target_weights(model).values())
    if kind == "l1":
        return sum(w.abs().sum() for w in weights)
    if kind == "l2":
        return sum(w.pow(2).sum() for w in weights)
    raise ConfigError(f"penalty must be 'l1' or 'l2', got {kind!r}")


def penalized_loss(kind: str, lam: float, label_smoothing: float = 0.0):
    """A ``fit`` loss: cross-entropy + lambda * penalty."""
    if lam < 0:
        raise ConfigError(f"penalty lambda must be >= 0, got {lam}")
    penalty(nn.Linear(1, 1), kind)  # validate the kind now

    def loss_fn(model, logits, x, y):
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing) + lam * penalty(model, kind)

    return loss_fn


def adjust_dropout(model: nn.Module, original_p: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """Scale each Dropout by sqrt(C_r / C_o) of the prunable layer registered just before it.

    ``original_p`` ({dropout name: D_o}) defaults to the current rates. Returns
    {dropout name: (D_o, D_r)}.
    """
    changes, last_weight = {}, None
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() >= 2:
            last_weight = w
        elif isinstance(module, nn.Dropout) and last_weight is not None:
            d_o = (original_p or {}).get(name, module.p)
            ratio = int(torch.count_nonzero(last_weight)) / last_weight.numel()
            module.p = d_o * ratio ** 0.5
            changes[name] = (d_o, module.p)
    return changes


def _linear_pairs(model: nn.Module) -> list[tuple[str, list[str], str]]:
    """(first Linear, pass-through modules between, second Linear) chains, via torch.fx."""
    graph = trace(model, "its dead neurons cannot be found without the graph").graph
    mods = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.Linear):
            continue
        between, cur = [], node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(mods.get(nxt.target), _PASS_THROUGH):
                between.append(nxt.target)
                cur = nxt
                continue
            if nxt.op == "call_module" and isinstance(mods.get(nxt.target), nn.Linear):
                pairs.append((node.target, between, nxt.target))
            break
    return pairs


@torch.no_grad()
def remove_dead_neurons(model: nn.Module) -> dict[str, int]:
    """Remove hidden units with no input or no output connection; {first layer: removed}."""
    removed = {}
    mods = dict(model.named_modules())
    for first, between, second in _linear_pairs(model):
        a, b = mods[first], mods[second]
        no_out = (b.weight == 0).all(dim=0)                     # (hidden,)
        no_in = (a.weight == 0).all(dim=1)
        dead = no_out | no_in
        if not dead.any() or dead.all():
            continue
        fold = no_in & ~no_out
        if fold.any():
            if b.bias is None:
                dead &= ~fold  # nowhere to fold the constant: keep those units
            else:
                const = a.bias[fold] if a.bias is not None else torch.zeros(int(fold.sum()))
                for m in between:  # the activation chain at inference (mode restored after)
                    was_training = mods[m].training
                    const = mods[m].eval()(const)
                    mods[m].train(was_training)
                b.bias += b.weight[:, fold] @ const
        keep = ~dead
        _shrink(a, rows=keep)
        _shrink(b, cols=keep)
        removed[first] = int(dead.sum())
    return removed


def _shrink(layer: nn.Linear, rows=None, cols=None) -> None:
    w = layer.weight.data
    if rows is not None:
        w = w[rows]
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[rows].clone())
    if cols is not None:
        w = w[:, cols]
    layer.weight = nn.Parameter(w.clone())
    mask = getattr(layer, "weight" + MASK_SUFFIX, None)
    if mask is not None:
        mask = mask[rows] if rows is not None else mask
        mask = mask[:, cols] if cols is not None else mask
        layer.register_buffer("weight" + MASK_SUFFIX, mask.clone())
    sync_layer_sizes(layer)
