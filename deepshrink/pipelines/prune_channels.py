"""``deepshrink prune-channels`` as one call: whole channels and filters removed from a model file
(a smaller dense model; criteria: L1/L2 filter norms, Li et al. 2017; FPGM, He et al. 2019;
BatchNorm scales, Liu et al. 2017), fine-tuned between rounds, the channel plan kept in the file.

Fine-tuning follows :func:`.defaults.finetune_settings` (method ``prune_channels``: a tenth of the
model's training LR, its weight decay, augmentation and label smoothing) unless
:class:`.defaults.Finetune` overrides it. A file pruned before keeps one plan: the old and the new
composed, so loading re-applies both. A result whose test accuracy fell past ``cfg.max_drop`` is
still written, with a warning on stderr and ``within_budget`` False in the result and the file's
history.

``latency`` (:class:`LatencyChoice`, ``--latency-target``) chooses the channel counts by measured
latency instead of a ratio: the NetAdapt loop (:mod:`deepshrink.prune.netadapt`) scores its proposals
on validation images carved from the training split (:func:`deepshrink.data.with_validation`; the
fine-tuning after it runs on the rest), and the result reports predicted and measured latency.

An early-exit model keeps its heads: each head's input loses the channels its layer lost
(:mod:`deepshrink.exits.cut`); the heads are not retrained and the thresholds are the old ones until
``early-exit --recalibrate`` chooses them again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..data import Dataset, Split, for_selection, with_validation
from ..errors import ConfigError
from ..exit_heads import EXITS_KEY, HEADS_ATTR, ExitPlan
from ..exits.cut import cut_heads, run_order
from ..io import ModelInfo, save_model
from ..prune import ChannelConfig, ChannelPlan, prune_channels_and_finetune
from ..prune.channel_finetune import ChannelFinetuneResult, within_budget
from ..prune.netadapt import NetAdaptConfig, netadapt
from ..prune.plan import PLAN_KEY, apply_plan, compose_plans
from ..train import TrainConfig, evaluate, fit
from .defaults import Finetune, finetune_settings
from .inputs import open_model_and_data

__all__ = ["ChannelRun", "LatencyChoice", "LatencyResult", "prune_channels_file", "FINETUNE_EPOCHS"]

# The fine-tuning budget when none is given: the same for the command and Python callers.
FINETUNE_EPOCHS = ChannelConfig.epochs


@dataclass
class LatencyChoice:
    """A latency target instead of a ratio: NetAdapt's settings, the batch size measured, and the
    validation images (``val_size`` carved; the first ``score_images`` of them score each proposal)."""

    netadapt: NetAdaptConfig
    batch_size: int = 1
    val_size: int | None = None              # None: the data set's default validation size
    score_images: int = 1000
    tune_batches: int = 30                   # NetAdapt's short-term fine-tuning: training batches after each
                                             # iteration (0: none; the proposals are then scored on a model
                                             # that has not recovered from the previous cuts)

    def check(self, cfg: ChannelConfig) -> None:
        if cfg.ratio is not None or cfg.macs_target is not None:
            raise ConfigError("a latency target chooses the channel counts itself: give it without a ratio or "
                              "a MAC target (--latency-target excludes --ratio and --macs-target)")
        if cfg.rounds != 1:
            raise ConfigError(f"a latency target prunes in its own iterations and fine-tunes once: rounds must be 1, "
                              f"got {cfg.rounds}")
        if cfg.scope != "layer" or cfg.round_to != 1:
            raise ConfigError("a latency target measures its own channel counts (every multiple of "
                              f"{self.netadapt.count_step}): scope and round_to do not apply (got {cfg.scope!r}, "
                              f"{cfg.round_to})")
        replace(cfg, ratio=0.0).check()         # epochs, max_drop: as for a ratio
        if self.batch_size < 1 or self.score_images < 1:
            raise ConfigError(f"batch size and score images must be >= 1 (got {self.batch_size}, {self.score_images})")
        if self.tune_batches < 0 or self.tune_batches != int(self.tune_batches):
            raise ConfigError(f"short-term fine-tuning batches must be a whole number >= 0, got {self.tune_batches}")
        self.netadapt.check()


@dataclass
class LatencyResult(ChannelFinetuneResult):
    """The fine-tuning result, plus what the latency target measured (:meth:`NetAdaptResult.summary`)."""

    latency: dict = field(default_factory=dict)


@dataclass
class ChannelRun:
    info: ModelInfo                     # what was written beside the model (result.model)
    result: ChannelFinetuneResult
    plan: ChannelPlan                   # the file's whole plan: earlier cuts composed with these


def prune_channels_file(src: str | os.PathLike, out: str | os.PathLike, cfg: ChannelConfig, *,
                        finetune: Finetune | None = None, data: str | None = None, arch: str | None = None,
                        trust_code: bool = False, seq_len: int | None = None,
                        tokenizer: str | None = None, model_kwargs: dict | None = None,
                        latency: LatencyChoice | None = None) -> ChannelRun:
    """Remove channels from the model in ``src`` (``cfg.ratio`` or ``cfg.macs_target``, or
    ``latency``'s target), fine-tune, and write the smaller model to ``out``. ``cfg``'s lr,
    weight_decay, augment and label_smoothing are replaced by :func:`.defaults.finetune_settings`
    (the model's own, or ``finetune``'s)."""
    if latency is not None:
        latency.check(cfg)                      # before any file is read
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer, model_kwargs=model_kwargs)
    if cfg.hold_out:     # fine-tune on the training images left; every accuracy below is then a validation one
        ds = for_selection(with_validation(ds, cfg.val_size))
    tune = finetune_settings("prune_channels", info, finetune)
    cfg = replace(cfg, lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment,
                  label_smoothing=tune.label_smoothing)
    torch.manual_seed(cfg.seed)
    example = torch.randn(1, *info.input_shape)
    exits = ExitPlan.from_dict(info.extra[EXITS_KEY], f"{src}") if EXITS_KEY in info.extra else None
    order = run_order(model, example) if exits is not None else []
    if latency is None:
        result = prune_channels_and_finetune(model, ds, example, cfg)
    else:
        result = _netadapt_and_finetune(model, ds, example, cfg, latency)
    cut = result.plan
    if exits is not None:
        cut = _cut_exit_heads(model, info, exits, order, result.plan, example, src)
    old = info.extra.get(PLAN_KEY)
    if old is not None and exits is not None and EXITS_KEY not in info.extra:    # heads dropped: and their cuts
        old = {"layers": {k: v for k, v in old.get("layers", {}).items() if k.split(".")[0] != HEADS_ATTR}}
    plan = compose_plans(ChannelPlan.from_dict(old, f"{src}: channel_plan"), cut) if old else cut
    info.extra[PLAN_KEY] = plan.to_dict()
    info.record("prune_channels", cfg, accuracy=result.accuracy_after, **result.to_dict(),
                accuracy_on="validation" if cfg.hold_out else "test")
    model.to(memory_format=torch.contiguous_format)
    save_model(model, out, info)
    if result.within_budget is False:
        _warn_over_budget(out, result)
    return ChannelRun(info, result, plan)


def _short_term(ds: Dataset, cfg: ChannelConfig, batches: int):
    """NetAdapt's short-term fine-tuning: one pass over ``batches`` x ``cfg.batch_size`` training
    images, a different seeded draw each call, at the fine-tuning settings of ``cfg``."""
    calls = [0]

    def tune(model: nn.Module) -> None:
        calls[0] += 1
        n = min(len(ds.train), batches * cfg.batch_size)
        pick = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(cfg.seed + calls[0]))[:n]
        part = replace(ds, train=Split(ds.train.x[pick], ds.train.y[pick]))
        tc = TrainConfig(epochs=1, lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                         augment=cfg.augment, label_smoothing=cfg.label_smoothing, seed=cfg.seed + calls[0],
                         eval_every=0, progress=False, verbose=False, evaluate_at_end=False)
        fit(model, part, tc)
    return tune


def _netadapt_and_finetune(model, ds: Dataset, example: torch.Tensor, cfg: ChannelConfig,
                           latency: LatencyChoice) -> LatencyResult:
    """Cut ``model`` in place by NetAdapt (proposals scored on validation images), then fine-tune
    once on the training images left; accuracies are test accuracies."""
    ds = with_validation(ds, latency.val_size)
    k = min(len(ds.val), latency.score_images)
    scored = Split(ds.val.x[:k], ds.val.y[:k])
    before = evaluate(model, ds.test, progress=cfg.progress, desc="test accuracy, before the cuts")
    na_cfg = replace(latency.netadapt, criterion=cfg.criterion, min_channels=cfg.min_channels, seed=cfg.seed,
                     verbose=cfg.verbose)
    x = torch.randn(latency.batch_size, *example.shape[1:])      # (batch, *input shape): the batch measured
    tune = _short_term(ds, cfg, latency.tune_batches) if latency.tune_batches else None
    na = netadapt(model, x, na_cfg, score=lambda m: evaluate(m, scored), tune=tune)
    if not na.reached:
        print(f"deepshrink: warning: latency target {na_cfg.latency_target:g} not reached: measured "
              f"{na.latency_after_ms:.3f} ms of {na.latency_before_ms:.3f} ms ({na.latency_ratio:.3f}x) when no group "
              "could be cut further (min channels) or the iterations ran out", file=sys.stderr, flush=True)
    apply_plan(model, na.plan)
    if tune is not None:                                         # the short-term tuned weights, same shapes
        model.load_state_dict(na.model.state_dict())
    pruned = evaluate(model, ds.test, progress=cfg.progress, desc="test accuracy, after the cuts")
    rec = {"round": 1, "iterations": len(na.iterations), "macs": na.macs_after, "accuracy_pruned": pruned,
           "finetune_epochs": int(cfg.epochs), "finetune_images": int(cfg.epochs) * len(ds.train)}
    fits = []
    if cfg.epochs > 0:
        tc = TrainConfig(epochs=int(cfg.epochs), lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                         augment=cfg.augment, label_smoothing=cfg.label_smoothing, seed=cfg.seed, eval_every=0,
                         progress=cfg.progress, verbose=cfg.verbose)
        fits.append(fit(model, ds, tc))
        rec["accuracy_tuned"] = fits[-1].accuracy
    after = fits[-1].accuracy if fits else pruned
    facts = {"latency_target": na_cfg.latency_target, "batch_size": latency.batch_size, "runtime": na_cfg.runtime,
             "tune_batches": latency.tune_batches,
             "threads": na_cfg.threads or torch.get_num_threads(), "val_images": len(ds.val), "score_images": k,
             **na.summary()}
    return LatencyResult(model, na.plan, before, pruned, after, na.macs_before, na.macs_after, na.params_before,
                         na.params_after, [rec], na.seconds, fits, cfg.max_drop,
                         within_budget(before, after, cfg.max_drop), latency=facts)


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
