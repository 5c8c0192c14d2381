"""Structured pruning: remove whole channels and filters, so the model becomes a smaller dense one.

Li et al. 2017 ("Pruning Filters for Efficient ConvNets") rank the filters of a layer by
importance, remove the lowest-ranked fraction with the feature maps they produce and the
kernels that read them, and fine-tune. Here the coupled layers come from
:mod:`.graph` (groups), the scores from :mod:`.criteria`, the cut from :mod:`.cutters`, and
the result is a :class:`~.plan.ChannelPlan`. How many channels each group keeps:

* a uniform ratio r: each prunable group of C channels keeps max(min_channels, round((1 - r) C));
* per-layer ratios ``{layer name: r}`` (a layer names the group of its output channels);
* global: scores divided by their group's mean, one ranking across groups, the lowest r of all
  prunable channels removed (each group keeps at least (1 - max_ratio) of its channels);
* a MAC target m: the smallest r (uniform or global) whose pruned model has at most m times the
  original MACs, found by bisection on r with the profiler counting MACs.

``sort_channels`` reorders every group by importance, which changes no output (a permutation
of the producing filters and of the consuming layers' inputs).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..profile import profile_model
from .criteria import get_criterion
from .graph import Group, build_groups
from .plan import ChannelPlan, apply_plan, make_plan

__all__ = ["ChannelResult", "score_groups", "choose_channels", "prune_channels", "sort_channels", "SCOPES"]

SCOPES = ("layer", "global")


@dataclass
class ChannelResult:
    model: nn.Module
    plan: ChannelPlan
    ratio: float | dict                       # the ratio applied (found by search for a MAC target)
    macs_before: int | None                   # None when measure=False
    macs_after: int | None
    params_before: int | None
    params_after: int | None
    channels: dict[str, list[int]] = field(default_factory=dict)   # group name -> [before, after]
    frozen: dict[str, str] = field(default_factory=dict)           # group name -> why it was left whole
    seconds: float = 0.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else float("nan")

    def summary(self) -> dict:
        return {"ratio": self.ratio, "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": self.macs_ratio, "params_before": self.params_before,
                "params_after": self.params_after, "channels": self.channels, "seconds": self.seconds}


def score_groups(groups: list[Group], criterion) -> dict[int, torch.Tensor]:
    """Scores (C,) of each prunable group; groups the criterion cannot score are left out."""
    fn = get_criterion(criterion)
    scores = {}
    for g in groups:
        if g.prunable:
            s = fn(g)
            if s is not None:
                scores[g.id] = torch.as_tensor(s, dtype=torch.float32).detach().reshape(g.size)
    return scores


def _n_keep(size: int, ratio: float, min_channels: int, round_to: int) -> int:
    n = round((1.0 - ratio) * size)
    if round_to > 1:
        n = round_to * max(1, round(n / round_to))
    return max(min(min_channels, size), min(size, n))


def _group_ratio(g: Group, ratio: float | Mapping[str, float]) -> float:
    if not isinstance(ratio, Mapping):
        return float(ratio)
    named = [float(ratio[m.module]) for m in g.members if m.dim == "out" and m.module in ratio]
    return max(named, default=0.0)


def choose_channels(groups: list[Group], scores: dict[int, torch.Tensor], ratio: float | Mapping[str, float],
                    scope: str = "layer", min_channels: int = 1, round_to: int = 1,
                    max_ratio: float = 0.9) -> dict[int, torch.Tensor]:
    """Channels each scored group keeps (ascending indices), for a ratio in ``scope``."""
    by_id = {g.id: g for g in groups}
    keep: dict[int, torch.Tensor] = {}
    if scope == "layer":
        for gid, s in scores.items():
            n = _n_keep(len(s), _group_ratio(by_id[gid], ratio), min_channels, round_to)
            keep[gid] = torch.topk(s, n).indices.sort().values
        return keep
    if scope != "global" or isinstance(ratio, Mapping):
        raise ConfigError(f"scope must be one of {SCOPES} (global takes one ratio), got {scope!r}")
    cand_score, cand_gid, cand_idx, protected = [], [], [], {}
    for gid, s in scores.items():
        floor = max(min(min_channels, len(s)), math.ceil((1.0 - max_ratio) * len(s)))
        order = torch.argsort(s, descending=True)
        protected[gid] = order[:floor]
        rest = order[floor:]
        cand_score.append(s[rest] / s.mean().clamp_min(1e-12))      # comparable across groups
        cand_gid += [gid] * len(rest)
        cand_idx.append(rest)
    total = sum(len(s) for s in scores.values())
    flat = torch.cat(cand_score) if cand_score else torch.empty(0)
    n_remove = min(len(flat), round(float(ratio) * total))
    removed = set(torch.argsort(flat)[:n_remove].tolist())
    idx_all = torch.cat(cand_idx) if cand_idx else torch.empty(0, dtype=torch.long)
    kept: dict[int, list[int]] = {gid: protected[gid].tolist() for gid in scores}
    for j in range(len(flat)):
        if j not in removed:
            kept[cand_gid[j]].append(int(idx_all[j]))
    return {gid: torch.tensor(sorted(v), dtype=torch.long) for gid, v in kept.items()}


def _macs(model: nn.Module, example_input) -> tuple[int, int]:
    t = profile_model(model, example_input).totals
    return int(t["macs"]), int(t["params"])


def _pruned_copy(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    return apply_plan(copy.deepcopy(model), plan)


def _search_ratio(model, example_input, groups, scores, macs_target: float, macs0: int, scope: str,
                  min_channels: int, round_to: int, steps: int = 12) -> float:
    """Smallest ratio whose pruned copy has at most ``macs_target * macs0`` MACs (bisection)."""
    def macs_at(r: float) -> int:
        plan = make_plan(groups, choose_channels(groups, scores, r, scope, min_channels, round_to))
        return _macs(_pruned_copy(model, plan), example_input)[0]

    hi = 0.95 if scope == "layer" else 0.9
    if macs_at(hi) > macs_target * macs0:
        raise ConfigError(f"MAC target {macs_target:g} is out of reach: removing {hi:.0%} of every prunable "
                          f"group leaves {macs_at(hi) / macs0:.3f} of the MACs (frozen layers keep the rest)")
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if macs_at(mid) <= macs_target * macs0:
            hi = mid
        else:
            lo = mid
    return hi


def _check_args(ratio, macs_target, scope) -> None:
    if (ratio is None) == (macs_target is None):
        raise ConfigError("give exactly one of ratio and macs_target")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    ratios = ratio.values() if isinstance(ratio, Mapping) else [] if ratio is None else [ratio]
    if any(not 0.0 <= float(r) < 1.0 for r in ratios):
        raise ConfigError(f"ratios are fractions of channels removed, in [0, 1); got {ratio}")
    if macs_target is not None and not 0.0 < macs_target <= 1.0:
        raise ConfigError(f"macs_target is the fraction of MACs kept, in (0, 1]; got {macs_target}")


def prune_channels(model: nn.Module, example_input, ratio: float | Mapping[str, float] | None = None,
                   macs_target: float | None = None, criterion="l1", scope: str = "layer",
                   min_channels: int = 1, round_to: int = 1, seed: int = 0,
                   inplace: bool = False, measure: bool = True) -> ChannelResult:
    """Remove channels from ``model`` (a copy unless ``inplace``); ``result.model`` is smaller.

    ``ratio``: fraction of each group's channels removed (a float, or ``{layer name: ratio}``);
    ``macs_target``: fraction of the MACs to keep instead (0.5 halves them).
    ``measure=False`` skips counting MACs and parameters before and after (the result's counts
    are None) unless the MAC target needs them.
    """
    _check_args(ratio, macs_target, scope)
    t0 = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    groups = build_groups(model, example_input)
    scores = score_groups(groups, get_criterion(criterion, seed))
    macs0, params0 = _macs(model, example_input) if measure or macs_target is not None else (None, None)
    if macs_target is not None:
        ratio = _search_ratio(model, example_input, groups, scores, macs_target, macs0, scope,
                              min_channels, round_to)
    keep = choose_channels(groups, scores, ratio, scope, min_channels, round_to)
    plan = make_plan(groups, keep)
    channels = {g.name: [g.size, len(keep[g.id])] for g in groups if g.id in keep}
    frozen = {g.name: g.frozen or "the criterion gives no scores" for g in groups if g.id not in keep}
    apply_plan(model, plan)
    seconds = time.perf_counter() - t0
    macs1, params1 = _macs(model, example_input) if measure else (None, None)
    return ChannelResult(model, plan, ratio if isinstance(ratio, Mapping) else float(ratio), macs0, macs1,
                         params0, params1, channels, frozen, seconds)


def sort_channels(model: nn.Module, example_input, criterion="fro", inplace: bool = False
                  ) -> tuple[nn.Module, ChannelPlan]:
    """Reorder each prunable group's channels by descending importance; outputs unchanged."""
    model = model if inplace else copy.deepcopy(model)
    groups = build_groups(model, example_input)
    scores = score_groups(groups, criterion)
    plan = make_plan(groups, {gid: torch.argsort(s, descending=True) for gid, s in scores.items()})
    return apply_plan(model, plan), plan
