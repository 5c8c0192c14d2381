"""Iterative channel pruning with fine-tuning between the cuts (Li et al. 2017, section 3.5).

R rounds of (prune, fine-tune epochs / R). Round r (1-based) brings the model to
``macs_target ** (r / R)`` of the original MACs, or keeps ``(1 - ratio) ** (r / R)`` of each
group's channels, so every round removes the same share of what is left. The plans of the
rounds compose into one plan on the original architecture (stored with the model).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Mapping

from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..train import FitResult, TrainConfig, evaluate, fit
from .channel import ChannelResult, prune_channels
from .plan import ChannelPlan, compose_plans

__all__ = ["ChannelConfig", "ChannelFinetuneResult", "prune_channels_and_finetune"]


@dataclass
class ChannelConfig:
    ratio: float | dict | None = None        # fraction of channels removed (or {layer: ratio})
    macs_target: float | None = None         # fraction of MACs kept instead
    criterion: str = "l1"
    scope: str = "layer"                     # "layer" (uniform or per-layer) or "global"
    rounds: int = 1
    epochs: int = 0                          # fine-tuning budget, split over the rounds
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    label_smoothing: float = 0.0
    min_channels: int = 1
    round_to: int = 1
    seed: int = 0
    progress: bool = True
    verbose: bool = True


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


def prune_channels_and_finetune(model: nn.Module, data: Dataset, example_input, cfg: ChannelConfig
                                ) -> ChannelFinetuneResult:
    """Prune ``model`` in place over ``cfg.rounds`` rounds, fine-tuning after each; returns the result."""
    if cfg.rounds < 1 or cfg.epochs < 0:
        raise ConfigError(f"rounds must be >= 1 and epochs >= 0 (got {cfg.rounds}, {cfg.epochs})")
    before = evaluate(model, data.test)
    per = [cfg.epochs // cfg.rounds + (1 if r < cfg.epochs % cfg.rounds else 0) for r in range(cfg.rounds)]
    plan, fits, rounds, pruned_acc, prune_s = ChannelPlan(), [], [], None, 0.0
    first: ChannelResult | None = None
    last: ChannelResult | None = None
    for r, ep in enumerate(per):
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
        acc = evaluate(model, data.test)
        pruned_acc = acc if pruned_acc is None else pruned_acc
        rec = {"round": r + 1, "ratio": last.ratio, "macs": last.macs_after, "accuracy_pruned": acc}
        if ep > 0:
            tc = TrainConfig(epochs=ep, lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                             augment=cfg.augment, label_smoothing=cfg.label_smoothing, seed=cfg.seed + r,
                             eval_every=0, progress=cfg.progress, verbose=cfg.verbose)
            fits.append(fit(model, data, tc))
            rec["accuracy_tuned"] = fits[-1].accuracy
        rounds.append(rec)
    after = fits[-1].accuracy if fits and per[-1] > 0 else evaluate(model, data.test)
    return ChannelFinetuneResult(model, plan, before, pruned_acc, after, first.macs_before, last.macs_after,
                                 first.params_before, last.params_after, rounds, prune_s, fits)
