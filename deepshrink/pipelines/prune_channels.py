"""``deepshrink prune-channels`` as one call: whole channels and filters removed from a model file
(a smaller dense model; criteria: L1/L2 filter norms, Li et al. 2017; FPGM, He et al. 2019;
BatchNorm scales, Liu et al. 2017), fine-tuned between rounds, the channel plan kept in the file.

Fine-tuning follows :func:`.defaults.finetune_settings` (method ``prune_channels``: a tenth of the
model's training LR, its weight decay, augmentation and label smoothing) unless
:class:`.defaults.Finetune` overrides it. A file pruned before keeps one plan: the old and the new
composed, so loading re-applies both. A result whose test accuracy fell past ``cfg.max_drop`` is
still written, with a warning on stderr and ``within_budget`` False in the result and the file's
history.

An early-exit model keeps its heads: each head's input loses the channels its layer lost
(:mod:`deepshrink.exits.cut`); the heads are not retrained and the thresholds are the old ones until
``early-exit --recalibrate`` chooses them again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

import torch

from ..exit_heads import EXITS_KEY, HEADS_ATTR, ExitPlan
from ..exits.cut import cut_heads, run_order
from ..io import ModelInfo, save_model
from ..prune import ChannelConfig, ChannelPlan, prune_channels_and_finetune
from ..prune.channel_finetune import ChannelFinetuneResult
from ..prune.plan import PLAN_KEY, compose_plans
from .defaults import Finetune, finetune_settings
from .inputs import open_model_and_data

__all__ = ["ChannelRun", "prune_channels_file", "FINETUNE_EPOCHS"]

# The fine-tuning budget when none is given: the same for the command and Python callers.
FINETUNE_EPOCHS = ChannelConfig.epochs


@dataclass
class ChannelRun:
    info: ModelInfo                     # what was written beside the model (result.model)
    result: ChannelFinetuneResult
    plan: ChannelPlan                   # the file's whole plan: earlier cuts composed with these


def prune_channels_file(src: str | os.PathLike, out: str | os.PathLike, cfg: ChannelConfig, *,
                        finetune: Finetune | None = None, data: str | None = None, arch: str | None = None,
                        trust_code: bool = False, seq_len: int | None = None,
                        tokenizer: str | None = None, model_kwargs: dict | None = None) -> ChannelRun:
    """Remove channels from the model in ``src`` (``cfg.ratio`` or ``cfg.macs_target``), fine-tune,
    and write the smaller model to ``out``. ``cfg``'s lr, weight_decay, augment and label_smoothing
    are replaced by :func:`.defaults.finetune_settings` (the model's own, or ``finetune``'s)."""
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer, model_kwargs=model_kwargs)
    tune = finetune_settings("prune_channels", info, finetune)
    cfg = replace(cfg, lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment,
                  label_smoothing=tune.label_smoothing)
    torch.manual_seed(cfg.seed)
    example = torch.randn(1, *info.input_shape)
    exits = ExitPlan.from_dict(info.extra[EXITS_KEY], f"{src}") if EXITS_KEY in info.extra else None
    order = run_order(model, example) if exits is not None else []
    result = prune_channels_and_finetune(model, ds, example, cfg)
    cut = result.plan
    if exits is not None:
        cut = _cut_exit_heads(model, info, exits, order, result.plan, example, src)
    old = info.extra.get(PLAN_KEY)
    if old is not None and exits is not None and EXITS_KEY not in info.extra:    # heads dropped: and their cuts
        old = {"layers": {k: v for k, v in old.get("layers", {}).items() if k.split(".")[0] != HEADS_ATTR}}
    plan = compose_plans(ChannelPlan.from_dict(old, f"{src}: channel_plan"), cut) if old else cut
    info.extra[PLAN_KEY] = plan.to_dict()
    info.record("prune_channels", cfg, accuracy=result.accuracy_after, **result.to_dict())
    model.to(memory_format=torch.contiguous_format)
    save_model(model, out, info)
    if result.within_budget is False:
        _warn_over_budget(out, result)
    return ChannelRun(info, result, plan)


def _cut_exit_heads(model, info: ModelInfo, exits: ExitPlan, order: list[str], cut: ChannelPlan,
                    example: torch.Tensor, src) -> ChannelPlan:
    """The exit heads' inputs cut to the channels their layers still produce, the cuts joined to
    ``cut``; heads that cannot be matched are all dropped with a warning (the file is then a plain
    model: run early-exit again)."""
    heads, unmatched = cut_heads(model, exits.layers, order, cut, example)
    if unmatched:
        delattr(model, HEADS_ATTR)
        del info.extra[EXITS_KEY]
        print(f"deepshrink: warning: {src}: cannot tell which channels the exit head(s) at {', '.join(unmatched)} "
              "still read after the cut; the exit heads are dropped (run deepshrink early-exit on the result)",
              file=sys.stderr, flush=True)
        return cut
    print("exit heads: inputs cut to match; heads and thresholds are kept as trained on the uncut model "
          "(choose the thresholds again: deepshrink early-exit OUT --recalibrate)", flush=True)
    return ChannelPlan({**cut.layers, **heads.layers})


def _warn_over_budget(out, result: ChannelFinetuneResult) -> None:
    """One line on stderr: the written model lost more accuracy than ``max_drop`` allows."""
    drop = (result.accuracy_before - result.accuracy_after) * 100
    untuned = [str(r["round"]) for r in result.rounds if "accuracy_tuned" not in r]
    hint = (f"round(s) {', '.join(untuned)} had no fine-tuning; " if untuned else "") + \
        "fine-tune longer (--finetune-epochs) or remove fewer channels"
    print(f"deepshrink: warning: {out}: test accuracy {result.accuracy_before * 100:.2f}% -> "
          f"{result.accuracy_after * 100:.2f}% (-{drop:.2f} pp), past the allowed drop of {result.max_drop} pp "
          f"(--max-drop); {hint}", file=sys.stderr, flush=True)
