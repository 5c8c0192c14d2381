"""Structured pruning of BERT-class transformers: whole attention heads and FFN neurons removed.

What is coupled and how it is cut is :mod:`deepshrink.head_plan` (model-file layer, so that a
file's plan is re-applied on load); this module scores the groups and chooses what to keep.

A *group* is one head (its rows of Q, K, V and columns of the attention output projection) or one
FFN neuron (its row of the intermediate dense with its bias, and its column of the output dense).
Scores, higher = keep:

* ``l1`` / ``l2``: the norm of the group's parameters (weights and the rows' biases), as Li et al.
  2017 score filters; ``l2`` is the usual choice for heads (Michel et al. 2019 compare it).
* ``taylor``: first-order Taylor importance of removing the group (Molchanov et al. 2019,
  "Importance Estimation for Neural Network Pruning", eq. 4 for a group):
  ``I_g = sum over batches (sum_{i in g} w_i * dL/dw_i)^2``, the squared first-order change of the
  loss when the group's weights go to zero. Without labels the loss compares the model with its
  unpruned self; the fidelity distance (:func:`deepshrink.distill.fidelity_distance`) is at its
  minimum there and has zero gradient, so every group would score 0. The loss is instead a random
  projection of the output, ``L = <v, f(x)>`` with ``v ~ N(0, I)`` drawn per batch (seeded): then
  ``E_v I_g = sum_n ||J_n w_g||^2``, the squared first-order change of each sample's output when the
  group is removed, i.e. the second-order rise of the squared-error fidelity distance (a
  Gauss-Newton estimate, as Kwon et al. 2022 score head and neuron masks with a Fisher estimate).

What to keep for a ``ratio`` (the fraction of the blocks' head + FFN MACs removed), per block and
uniform, so that every block is thinned alike (no global ranking: head and neuron scores are not on
one scale): with ``H`` heads of size ``d``, hidden size ``E``, ``F`` neurons and sequence length
``L``, a head costs ``4 E d + 2 L d`` MACs per token (Q, K, V, output projection; ``q k^T`` and
``a v``) and a neuron ``2 E``. Each block drops ``floor(ratio * H)`` heads (at most ``H - 1``), the
lowest-scored, then the lowest-scored neurons that bring its removed MACs nearest ``ratio`` of its
total (at most ``F - 1``). The MACs removed are then within one neuron of the target in each block
unless the FFN alone cannot make up the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..head_plan import (HEAD_PLAN_KEY, Block, HeadPlan, apply_head_plan, compose_head_plans, find_blocks,
                         prune_attention_heads, prune_ffn_neurons)

__all__ = ["HeadConfig", "HEAD_CRITERIA", "check_config", "HEAD_PLAN_KEY", "HeadPlan", "Block", "find_blocks", "norm_scores",
           "taylor_scores", "group_macs", "choose_kept", "head_plan_from", "apply_head_plan", "compose_head_plans",
           "prune_attention_heads", "prune_ffn_neurons", "prune_transformer"]

HEAD_CRITERIA = ("l1", "l2", "taylor")

Scores = dict[str, tuple[torch.Tensor, torch.Tensor]]    # block name -> (head scores (H,), neuron scores (F,))
Kept = dict[str, tuple[torch.Tensor, torch.Tensor]]      # block name -> (kept heads, kept neurons), ascending


@dataclass
class HeadConfig:
    ratio: float = 0.3               # fraction of the blocks' head + FFN MACs removed, in (0, 1)
    criterion: str = "l2"
    batches: int = 4                 # taylor: calibration batches
    batch_size: int = 16             # taylor: sentences per batch
    seed: int = 0                    # taylor: the random output projections


def check_config(cfg: HeadConfig) -> None:
    if not (isinstance(cfg.ratio, (int, float)) and 0 < cfg.ratio < 1):
        raise ConfigError(f"--ratio {cfg.ratio!r}: the fraction of head and FFN MACs removed must lie in (0, 1)")
    if cfg.criterion not in HEAD_CRITERIA:
        raise ConfigError(f"--criterion {cfg.criterion!r}: choose one of {', '.join(HEAD_CRITERIA)}")
    if cfg.batches < 1 or cfg.batch_size < 1:
        raise ConfigError(f"calibration needs at least one batch of one sentence "
                          f"(got {cfg.batches} x {cfg.batch_size})")


def _group_sums(block: Block, per_element) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_element(param) -> tensor like param`` summed over each head (H,) and each neuron (F,)."""
    h, d = block.num_heads, block.head_size
    heads = torch.zeros(h, dtype=torch.float64)
    for lin in block.qkv:
        heads += per_element(lin.weight).double().reshape(h, d, -1).sum((1, 2))     # (H*d, E) -> (H,)
        if lin.bias is not None:
            heads += per_element(lin.bias).double().reshape(h, d).sum(1)
    heads += per_element(block.attn_out.weight).double().reshape(-1, h, d).sum((0, 2))   # (E, H*d) -> (H,)
    ffn = per_element(block.ffn_in.weight).double().sum(1)                            # (F, E) -> (F,)
    if block.ffn_in.bias is not None:
        ffn += per_element(block.ffn_in.bias).double()
    ffn += per_element(block.ffn_out.weight).double().sum(0)                          # (E, F) -> (F,)
    return heads, ffn


@torch.no_grad()
def norm_scores(blocks: list[Block], p: int) -> Scores:
    """The ``p``-norm (1 or 2) of each head's and each neuron's parameters."""
    out = {}
    for b in blocks:
        heads, ffn = _group_sums(b, lambda t: t.double().abs() ** p)
        out[b.name] = (heads ** (1 / p), ffn ** (1 / p))
    return out


def taylor_scores(model: nn.Module, blocks: list[Block], batches: Iterable[torch.Tensor], seed: int = 0) -> Scores:
    """``sum over batches (sum_{i in g} w_i g_i)^2`` with ``g`` the gradient of ``<v, model(x)>``,
    ``v ~ N(0, I)`` per batch (module docstring); the model runs in eval mode (no dropout)."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for b in blocks for lin in (*b.qkv, b.attn_out, b.ffn_in, b.ffn_out)
              for p in (lin.weight, lin.bias) if p is not None]
    totals = {b.name: (torch.zeros(b.num_heads, dtype=torch.float64), torch.zeros(b.ffn_size, dtype=torch.float64))
              for b in blocks}
    training = model.training
    model.eval()
    seen = 0
    try:
        for x in batches:
            seen += 1
            with torch.enable_grad():
                out = model(x)
                probe = torch.randn(out.shape, generator=gen).to(out.dtype)
                grads = torch.autograd.grad((out * probe).sum(), params, allow_unused=True)
            g = {id(p): gr for p, gr in zip(params, grads)}
            for b in blocks:
                heads, ffn = _group_sums(b, lambda t: t.detach() * g[id(t)] if g.get(id(t)) is not None
                                         else torch.zeros_like(t))
                totals[b.name][0].add_(heads ** 2)
                totals[b.name][1].add_(ffn ** 2)
    finally:
        model.train(training)
    if not seen:
        raise ConfigError("taylor scores need at least one calibration batch")
    return totals


def group_macs(block: Block, seq_len: int) -> tuple[int, int]:
    """MACs per token of one head (``4 E d + 2 L d``) and of one FFN neuron (``2 E``)."""
    e, d = block.ffn_in.in_features, block.head_size
    return 4 * e * d + 2 * seq_len * d, 2 * e


def _lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """The indices kept after dropping the ``n`` lowest scores (ties: the later index goes), ascending."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:len(scores) - n].sort().values


def choose_kept(blocks: list[Block], scores: Scores, ratio: float, seq_len: int) -> Kept:
    """Per block, the kept heads and neurons (ascending) for ``ratio`` of its MACs (module docstring)."""
    kept = {}
    for b in blocks:
        head_cost, neuron_cost = group_macs(b, seq_len)
        target = ratio * (b.num_heads * head_cost + b.ffn_size * neuron_cost)
        n_heads = min(b.num_heads - 1, math.floor(ratio * b.num_heads + 1e-9))
        n_ffn = min(b.ffn_size - 1, max(0, round((target - n_heads * head_cost) / neuron_cost)))
        head_scores, ffn_scores = scores[b.name]
        kept[b.name] = (_lowest(head_scores, n_heads), _lowest(ffn_scores, n_ffn))
    return kept


def head_plan_from(blocks: list[Block], kept: Kept) -> HeadPlan:
    """The plan keeping ``kept[name] = (heads, neurons)``; a part that keeps everything is left out."""
    layers: dict[str, dict[str, list[int]]] = {}
    for b in blocks:
        if b.name not in kept:
            continue
        heads, ffn = (t.tolist() for t in kept[b.name])
        if heads != list(range(b.num_heads)):
            layers.setdefault(b.name, {})["heads"] = heads
        if ffn != list(range(b.ffn_size)):
            layers.setdefault(b.name, {})["ffn"] = ffn
    return HeadPlan(layers)


def prune_transformer(model: nn.Module, cfg: HeadConfig, seq_len: int,
                      batches: Iterable[torch.Tensor] | None = None) -> HeadPlan:
    """Score, choose and cut ``model``'s heads and FFN neurons in place; returns the plan applied.
    ``batches`` (token ids) are needed for ``taylor``; ``seq_len`` prices the attention products."""
    check_config(cfg)
    blocks = find_blocks(model)
    if not blocks:
        raise ConfigError(f"{type(model).__name__} has no transformer blocks to prune (modules with "
                          "attention.self.query/key/value, attention.output.dense, intermediate.dense, output.dense)")
    if cfg.criterion == "taylor":
        if batches is None:
            raise ConfigError("--criterion taylor needs calibration data (--data text:FILE)")
        scores = taylor_scores(model, blocks, batches, cfg.seed)
    else:
        scores = norm_scores(blocks, 1 if cfg.criterion == "l1" else 2)
    plan = head_plan_from(blocks, choose_kept(blocks, scores, cfg.ratio, seq_len))
    apply_head_plan(model, plan)
    return plan
