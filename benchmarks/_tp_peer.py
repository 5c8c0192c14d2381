"""Torch-Pruning (Fang et al., CVPR 2023; PyPI ``torch-pruning``) as the peer of
benchmarks/prune_latency_target.py, on the same models and inputs in the same process.

* ``prune_cnn(model, x, macs_goal)``: Torch-Pruning's ``MetaPruner`` with L1 magnitude
  importance, one pruning ratio for every layer (its default, local), the classifier kept; the
  ratio found by bisection so that the pruned model's MACs (our profiler) land on ``macs_goal``
  (a fraction of the dense MACs), so both tools are compared at the same MACs. Returns the pruned
  copy, the ratio, the seconds of the final ``pruner.step()`` (graph + cut, as our cut is timed)
  and of the whole search.
* ``prune_bert(model, x, ratio)``: its Hugging Face recipe for BERT: attention heads
  (``num_heads``, ``prune_num_heads``, ``head_pruning_ratio``) and FFN neurons at ``ratio``, the
  residual width kept (embeddings, the attention and FFN output projections and the pooler are
  ignored layers, so only heads and intermediate neurons go, as ours removes them); then each
  attention module's head count is updated, as Torch-Pruning's example does.

Torch-Pruning is a peer for the benchmarks, not a dependency: ``make benchmarks`` installs it.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from deepshrink.profile import profile_model

__all__ = ["prune_cnn", "prune_bert"]


def _tp():
    try:
        import torch_pruning as tp
    except ImportError:
        raise SystemExit("the peer torch-pruning is not installed: run `make benchmarks` "
                         "(or pip install --no-deps torch-pruning)") from None
    return tp


def _macs(model: nn.Module, x) -> int:
    return int(profile_model(model, x[:1]).totals["macs"])


def _cut_cnn(model: nn.Module, x, ratio: float) -> tuple[nn.Module, float]:
    tp = _tp()
    m = copy.deepcopy(model).eval()
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(m, x[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[last])
    pruner.step()
    return m.eval(), time.perf_counter() - t0


def prune_cnn(model: nn.Module, x, macs_goal: float, steps: int = 14) -> dict:
    """Uniform L1 channel pruning by Torch-Pruning at ``macs_goal`` of the dense MACs."""
    t0 = time.perf_counter()
    dense = _macs(model, x)
    lo, hi = 0.0, 0.95
    for _ in range(steps):                       # MACs fall as the ratio grows
        mid = (lo + hi) / 2
        pruned, _ = _cut_cnn(model, x, mid)
        if _macs(pruned, x) > macs_goal * dense:
            lo = mid
        else:
            hi = mid
    ratio = lo if abs(_macs(_cut_cnn(model, x, lo)[0], x) / dense - macs_goal) < \
        abs(_macs(_cut_cnn(model, x, hi)[0], x) / dense - macs_goal) else hi
    pruned, seconds = _cut_cnn(model, x, ratio)
    return {"model": pruned, "ratio": ratio, "prune_seconds": seconds, "search_seconds": time.perf_counter() - t0,
            "macs_before": dense, "macs_after": _macs(pruned, x)}


def _bert(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "encoder") and hasattr(m, "embeddings"):
            return m
    raise SystemExit("Torch-Pruning peer: no BERT-style encoder (embeddings + encoder) in the model")


def prune_bert(model: nn.Module, x, ratio: float) -> dict:
    """Heads and FFN neurons at ``ratio`` by Torch-Pruning's L1 importance, the hidden width kept."""
    tp = _tp()
    m = copy.deepcopy(model).eval()
    bert = _bert(m)
    num_heads, attn = {}, []
    for mod in bert.modules():
        if all(hasattr(mod, k) for k in ("query", "key", "value", "num_attention_heads")):
            attn.append(mod)
            for lin in (mod.query, mod.key, mod.value):
                num_heads[lin] = mod.num_attention_heads
    ignored = [bert.embeddings] + ([bert.pooler] if getattr(bert, "pooler", None) is not None else [])
    for name, mod in bert.named_modules():
        if name.endswith("output.dense"):        # attention output and FFN output projections: the residual width
            ignored.append(mod)
    dense = _macs(model, x)
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(m, x[:1], importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                  num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
                                  head_pruning_ratio=ratio, ignored_layers=ignored)
    pruner.step()
    seconds = time.perf_counter() - t0
    for mod in attn:                             # the module's own bookkeeping, as Torch-Pruning's example does
        mod.num_attention_heads = pruner.num_heads[mod.query]
        mod.all_head_size = mod.query.out_features
        mod.attention_head_size = mod.all_head_size // mod.num_attention_heads
    with torch.no_grad():
        m(x[:1])                                 # runs with the new shapes
    return {"model": m.eval(), "ratio": ratio, "prune_seconds": seconds, "macs_before": dense,
            "macs_after": _macs(m, x), "heads": [mod.num_attention_heads for mod in attn],
            "ffn": [mod.intermediate.dense.out_features for mod in bert.encoder.layer]}
