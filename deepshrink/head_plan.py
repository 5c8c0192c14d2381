"""The head plan: plain data saying, for each transformer block, which attention heads and which
FFN neurons it keeps; found by named-module patterns, cut in place, re-applied on load.

``{"layers": {"model.encoder.layer.0": {"heads": [0, 2, 3], "ffn": [5, 9, ...]}, ...}}``: a block is
named by its module path (as the channel plan names layers), and each list holds indices of the
*original* block's heads (``0 .. num_heads - 1``) or intermediate neurons (``0 .. intermediate_size - 1``),
in increasing order; a block or a key that is absent is untouched. Structured pruning of
transformers (:mod:`deepshrink.prune.transformer`) computes a plan, :func:`apply_head_plan` cuts it,
the model file stores it (``ModelInfo.extra["head_plan"]``) and the model-file layer re-applies it to
the freshly built architecture on load, before the stored tensors are loaded (Distiller's thinning
recipes, as for :mod:`deepshrink.channel_plan`). A plan applied after another composes with it
(:func:`compose_head_plans`), so the file keeps one plan.

What is coupled, read from the BERT layout of Hugging Face transformers (a block is any module
holding these children; cross-attention, ``crossattention.*``, is never cut):

* head ``h`` of ``attention.self`` with head size ``d``: rows ``h*d .. (h+1)*d - 1`` of ``query``,
  ``key`` and ``value`` (weights and biases) and the same columns of ``attention.output.dense``;
  the attention module's ``num_attention_heads`` and ``all_head_size`` follow (the forward itself
  reshapes by ``attention_head_size`` only, so a head count that disagreed would be silent);
* FFN neuron ``j``: row ``j`` of ``intermediate.dense`` (weight and bias) and column ``j`` of
  ``output.dense``.

A block keeps at least one head and one neuron: an empty Linear is no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .channel_plan import IndexPlan, compose_plans
from .errors import ModelError
from .layers import prune_linear_in_channels, prune_linear_out_channels

__all__ = ["HEAD_PLAN_KEY", "PARTS", "HeadPlan", "Block", "find_blocks", "apply_head_plan", "compose_head_plans",
           "prune_attention_heads", "prune_ffn_neurons"]

HEAD_PLAN_KEY = "head_plan"
PARTS = ("heads", "ffn")
# child paths of a block, relative to it (the BERT layout of transformers)
QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
ATTN_OUT = "attention.output.dense"
FFN_IN = "intermediate.dense"
FFN_OUT = "output.dense"


@dataclass
class HeadPlan(IndexPlan):
    """{block: {"heads": [kept heads], "ffn": [kept intermediate neurons]}}, indices increasing."""

    KEYS: ClassVar[tuple[str, ...]] = PARTS
    UNIT: ClassVar[str] = "block"
    PART: ClassVar[str] = "part"
    INCREASING: ClassVar[bool] = True
    WHAT: ClassVar[str] = "head plan"


@dataclass
class Block:
    """One transformer block found by its children's names: what its heads and neurons couple."""

    name: str
    attention: nn.Module          # attention.self: num_attention_heads, attention_head_size, all_head_size
    qkv: tuple[nn.Linear, nn.Linear, nn.Linear]
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear

    @property
    def num_heads(self) -> int:
        return self.qkv[0].out_features // self.head_size

    @property
    def head_size(self) -> int:
        return int(self.attention.attention_head_size)

    @property
    def ffn_size(self) -> int:
        return self.ffn_in.out_features


def _child(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def find_blocks(model: nn.Module) -> list[Block]:
    """Every block of ``model`` with the BERT layout (module docstring), in module order; a block
    whose pieces are not ``nn.Linear`` of matching sizes is left out (never cut wrongly)."""
    blocks = []
    for name, module in model.named_modules():
        parts = [_child(module, p) for p in (*QKV, ATTN_OUT, FFN_IN, FFN_OUT)]
        attention = _child(module, "attention.self")
        if not all(isinstance(p, nn.Linear) for p in parts) or not isinstance(
                getattr(attention, "attention_head_size", None), int):
            continue
        q, k, v, o, fi, fo = parts
        d = attention.attention_head_size
        if (d < 1 or q.out_features % d or not q.out_features == k.out_features == v.out_features == o.in_features
                or fi.out_features != fo.in_features):
            continue
        blocks.append(Block(name, attention, (q, k, v), o, fi, fo))
    return blocks


def _kept(idx, size: int, what: str, where: str) -> torch.Tensor:
    t = torch.as_tensor(idx, dtype=torch.long)
    if t.dim() != 1 or len(t) == 0 or int(t.min()) < 0 or int(t.max()) >= size:
        raise ModelError(f"{where}: kept {what} must be a non-empty list within [0, {size}), got {list(idx)}")
    return t


@torch.no_grad()
def prune_attention_heads(block: Block, heads, where: str = "") -> None:
    """Keep heads ``heads`` of ``block``: Q/K/V (H*d, E) -> (len*d, E), the output dense (E, H*d) -> (E, len*d)."""
    where = where or block.name
    d = block.head_size
    idx = _kept(heads, block.num_heads, "heads", where)
    rows = (idx[:, None] * d + torch.arange(d)).flatten()            # (len * d,) the kept heads' rows
    for lin in block.qkv:
        prune_linear_out_channels(lin, rows, name=where)
    prune_linear_in_channels(block.attn_out, rows, name=where)
    block.attention.num_attention_heads = len(idx)
    block.attention.all_head_size = len(idx) * d


@torch.no_grad()
def prune_ffn_neurons(block: Block, neurons, where: str = "") -> None:
    """Keep FFN neurons ``neurons``: intermediate (F, E) -> (len, E), output dense (E, F) -> (E, len)."""
    where = where or block.name
    idx = _kept(neurons, block.ffn_size, "FFN neurons", where)
    prune_linear_out_channels(block.ffn_in, idx, name=where)
    prune_linear_in_channels(block.ffn_out, idx, name=where)


def apply_head_plan(model: nn.Module, plan: HeadPlan) -> nn.Module:
    """Cut ``model`` in place as the plan says; returns it. A named block the model lacks is a ModelError."""
    blocks = {b.name: b for b in find_blocks(model)}
    for name, parts in plan.layers.items():
        block = blocks.get(name)
        if block is None:
            raise ModelError(f"head plan names block {name!r}, which the model does not have "
                             "(a module with attention.self.query/key/value, attention.output.dense, "
                             "intermediate.dense and output.dense)")
        if "heads" in parts:
            prune_attention_heads(block, parts["heads"], name)
        if "ffn" in parts:
            prune_ffn_neurons(block, parts["ffn"], name)
    return model


def compose_head_plans(first: HeadPlan, second: HeadPlan) -> HeadPlan:
    """One plan doing ``first`` then ``second`` (whose indices refer to first's result)."""
    return compose_plans(first, second)
