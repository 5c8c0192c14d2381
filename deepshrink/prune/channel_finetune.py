"""Iterative channel pruning with fine-tuning between the cuts (Li et al. 2017, section 3.5).

R rounds of (prune, fine-tune epochs / R). Round r (1-based) brings the model to
``macs_target ** (r / R)`` of the original MACs, or keeps ``(1 - ratio) ** (r / R)`` of each
group's channels, so every round removes the same share of what is left. The plans of the
rounds compose into one plan on the original architecture (stored with the model).

Every round is fine-tuned whenever there is a budget (:func:`round_budgets`): fewer epochs than
rounds become one pass over a share of the training split per round (1 epoch over 3 rounds: a
third of the images after each cut, a different third each time), never a first round that takes
the whole budget and later rounds left untuned. A result whose test accuracy fell by more than
``max_drop`` percentage points is flagged (``within_budget`` False), not refused.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

import torch
from torch import nn

from ..data import Dataset, Split
from ..errors import ConfigError
from ..train import FitResult, TrainConfig, evaluate, fit
from .channel import ChannelResult, _check_args, prune_channels
from .plan import ChannelPlan, compose_plans

__all__ = ["ChannelConfig", "ChannelFinetuneResult", "prune_channels_and_finetune", "round_budgets",
           "within_budget"]


@dataclass
class ChannelConfig:
    ratio: float | dict | None = None        # fraction of channels removed (or {layer: ratio})
    macs_target: float | None = None         # fraction of MACs kept instead
    criterion: str = "l1"
    scope: str = "layer"                     # "layer" (uniform or per-layer) or "global"
    rounds: int = 1
    epochs: int = 3                          # fine-tuning budget, spread over the rounds (round_budgets); 0: cut only
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    label_smoothing: float = 0.0
    min_channels: int = 1
    round_to: int = 1
    seed: int = 0
    max_drop: float | None = 1.0             # test-accuracy drop (pp) past which the result is flagged
    hold_out: bool = False                   # leave the validation split out of the fine-tuning (and report on it)
    val_size: int | None = None              # its size with hold_out (None: 10% of the training split, at most 5,000)
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        _check_args(self.ratio, self.macs_target, self.scope)   # before any evaluation, not after it
        if self.rounds < 1 or self.epochs < 0 or self.epochs != int(self.epochs):
            raise ConfigError(f"rounds must be >= 1 and epochs a whole number >= 0 (got {self.rounds}, {self.epochs})")
        if self.max_drop is not None and not 0 <= self.max_drop < math.inf:
            raise ConfigError(f"max_drop must be finite and >= 0 percentage points, got {self.max_drop}")


@dataclass
class ChannelFinetuneResult:
    model: nn.Module
    plan: ChannelPlan
    accuracy_before: float
    accuracy_pruned: float                   # right after the first cut
    accuracy_after: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    rounds: list[dict] = field(default_factory=list)
    prune_seconds: float = 0.0
    fits: list[FitResult] = field(default_factory=list)
    max_drop: float | None = None            # the allowed test-accuracy drop, in percentage points
    within_budget: bool | None = None        # False: the drop is past max_drop (None: not checked)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "plan", "fits")}
        d["macs_ratio"] = self.macs_ratio
        d["fits"] = [{"seconds": f.seconds, "accuracy": f.accuracy} for f in self.fits]
        return d


def _round_ratio(ratio, rounds: int):
    """Per-round ratio so that R rounds remove ``ratio`` of the original channels."""
    def one(x: float) -> float:
        return 1.0 - (1.0 - x) ** (1.0 / rounds)
    return {k: one(float(v)) for k, v in ratio.items()} if isinstance(ratio, Mapping) else one(float(ratio))


def round_budgets(epochs: int, rounds: int) -> list[tuple[int, float]]:
    """(epochs, share of the training split per epoch) of each round's fine-tuning: ``epochs``
    passes over the split in all, and every round some fine-tuning when ``epochs`` > 0.

    * ``epochs >= rounds``: whole epochs over the whole split, the remainder to the last rounds
      (the deepest cuts, after which the result is measured): 4 over 3 rounds is 1, 1, 2;
    * ``0 < epochs < rounds``: one pass over ``epochs / rounds`` of the split per round;
    * ``epochs == 0``: no fine-tuning (cut only).
    """
    if rounds < 1 or epochs < 0:
        raise ConfigError(f"rounds must be >= 1 and epochs >= 0 (got {rounds}, {epochs})")
    if epochs == 0:
        return [(0, 0.0)] * rounds
    if epochs >= rounds:
        base, extra = divmod(int(epochs), rounds)
        return [(base + (1 if r >= rounds - extra else 0), 1.0) for r in range(rounds)]
    return [(1, epochs / rounds)] * rounds


def within_budget(before: float | None, after: float | None, max_drop: float | None) -> bool | None:
    """Whether accuracy ``before`` -> ``after`` (fractions) fell by at most ``max_drop`` percentage
    points; None when there is nothing to check (no budget, or no accuracy: unlabelled data)."""
    if max_drop is None or before is None or after is None or math.isnan(before) or math.isnan(after):
        return None
    return (before - after) * 100 <= max_drop + 1e-9


def _round_data(data: Dataset, share: float, r: int, seed: int) -> Dataset:
    """Round ``r``'s part of the training split: all of it, or ``share`` of it taken from a
    seeded permutation at offset ``r`` shares, so the rounds' parts follow on from each other."""
    if share >= 1:
        return data
    n = len(data.train)
    m = max(1, int(round(n * share)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    idx = order[(r * m + torch.arange(m)) % n]
    return replace(data, train=Split(data.train.x[idx], data.train.y[idx]))


def _pct(acc: float | None) -> str:
    return "n/a" if acc is None or math.isnan(acc) else f"{acc * 100:.2f}%"


def _tuning(epochs: int, part: Dataset, whole: Dataset, cfg: ChannelConfig) -> str:
    """What a round's fine-tuning is about to do, in words."""
    if epochs == 0:
        return "no fine-tuning (epochs 0)"
    what = (f"{epochs} epoch{'s' if epochs != 1 else ''}" if part is whole else
            f"one pass over {len(part.train):,} of the {len(whole.train):,} training images")
    return (f"fine-tuning {what} (SGD, lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, "
            f"augment {'on' if cfg.augment else 'off'}) ...")


def prune_channels_and_finetune(model: nn.Module, data: Dataset, example_input, cfg: ChannelConfig
                                ) -> ChannelFinetuneResult:
    """Prune ``model`` in place over ``cfg.rounds`` rounds, fine-tuning after each; returns the result."""
    cfg.check()
    before = evaluate(model, data.test, progress=cfg.progress, desc="test accuracy, before the cuts")
    per = round_budgets(int(cfg.epochs), cfg.rounds)
    plan, fits, rounds, pruned_acc, prune_s = ChannelPlan(), [], [], None, 0.0
    first: ChannelResult | None = None
    last: ChannelResult | None = None
    for r, (ep, share) in enumerate(per):
        kw = {}
        if cfg.macs_target is not None:
            base = first.macs_before if first else None
            goal = cfg.macs_target ** ((r + 1) / cfg.rounds)
            kw["macs_target"] = min(1.0, goal * base / last.macs_after) if base else goal
        else:
            kw["ratio"] = _round_ratio(cfg.ratio, cfg.rounds) if cfg.ratio is not None else None
        t0 = time.perf_counter()
        last = prune_channels(model, example_input, criterion=cfg.criterion, scope=cfg.scope,
                              min_channels=cfg.min_channels, round_to=cfg.round_to, seed=cfg.seed,
                              inplace=True, **kw)
        prune_s += time.perf_counter() - t0
        first = first or last
        plan = compose_plans(plan, last.plan)
        acc = evaluate(model, data.test, progress=cfg.progress, desc=f"test accuracy, round {r + 1} cut")
        pruned_acc = acc if pruned_acc is None else pruned_acc
        part = _round_data(data, share, r, cfg.seed) if ep > 0 else data
        rec = {"round": r + 1, "ratio": last.ratio, "macs": last.macs_after, "accuracy_pruned": acc,
               "finetune_epochs": ep * share, "finetune_images": ep * len(part.train)}
        if cfg.verbose:
            print(f"round {r + 1}/{cfg.rounds}: {last.macs_after:,} MACs left "
                  f"({last.macs_after / max(1, first.macs_before):.1%} of {first.macs_before:,}), "
                  f"test accuracy {_pct(acc)} after the cut; {_tuning(ep, part, data, cfg)}", flush=True)
        if ep > 0:
            tc = TrainConfig(epochs=ep, lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                             augment=cfg.augment, label_smoothing=cfg.label_smoothing, seed=cfg.seed + r,
                             eval_every=0, progress=cfg.progress, verbose=cfg.verbose)
            fits.append(fit(model, part, tc))
            rec["accuracy_tuned"] = fits[-1].accuracy
        rounds.append(rec)
    after = fits[-1].accuracy if fits and per[-1][0] > 0 else evaluate(model, data.test)
    return ChannelFinetuneResult(model, plan, before, pruned_acc, after, first.macs_before, last.macs_after,
                                 first.params_before, last.params_after, rounds, prune_s, fits,
                                 cfg.max_drop, within_budget(before, after, cfg.max_drop))
