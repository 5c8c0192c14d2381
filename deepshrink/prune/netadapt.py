"""Latency-aware channel pruning: the NetAdapt loop (Yang et al. 2018).

NetAdapt ("NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications", ECCV
2018, algorithm 1) shrinks a network in iterations, each asked to save a further ``step`` of
latency. In iteration i, for every prunable group g (the coupled channels of :mod:`.graph`):

1. the predicted latency of the model with g cut to c channels is
   ``T(c) = sum over conv/linear layers L of table[L at the channels it then has] + R``,
   where the table (:mod:`.latency_table`) holds each layer measured alone, and the residual
   ``R = T_measured(original) - sum of table entries of the original layers`` stands for what
   the table does not hold (BatchNorm, activations, pooling, Python between the ops); where the
   layers timed alone add up to more than the whole model, R would be negative and a prediction
   could fall below zero, so the table entries are scaled to the measurement instead; R (or the
   scale) is set again after every whole-model measurement, so the prediction starts each
   iteration from what was measured, not from what the table drifted to;
2. g's proposal is the *largest* c (among the measured candidates, at most ``max_cut`` of its
   channels fewer than now and at least ``min_keep`` of its original ones; where no such c saves
   the whole step, the c that saves most, so that the loop does not stop while cuts still save) with
   ``T(current) - T(c) >= step``, so a count that falls off the CPU's blocked kernels and saves
   nothing is passed over for the next one that does (:func:`choose_count`);
3. the channels kept are the top c by the criterion (:mod:`.criteria`, L1 by default);
4. the proposal whose model keeps the highest short-term ``score(model)`` (the caller's:
   validation accuracy) is taken, and, with ``tune``, trained briefly (the paper's short-term
   fine-tuning, here of the chosen proposal only) before the next iteration scores its proposals.

Where the table predicts no saving for any group (small layers at batch 1, whose time alone is
mostly fixed cost and noise), the loop does not stop on the prediction: each group proposes its
largest allowed cut, every such model is *measured* against the original, and those that save at
least half the step compete by score as above (``measured`` in the iteration's record). It stops
when no cut saves that much when measured.

The loop stops when the *measured* latency of the whole model is at most ``latency_target``
times the original one; each measurement times the model side by side with the original
(interleaved, the median of the per-pair ratios), so that a machine that slows down or speeds
up between iterations does not stop the loop early or late. The step is a fixed fraction of the
original latency, capped at what is still missing to the target. Measurements are injectable
(``measure``, ``measure_layer``) so that tests can use a deterministic latency.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..profile import measure_latency, profile_model
from ..profile.latency import compare_latency
from .channel import score_groups
from .criteria import get_criterion
from .graph import Group, build_groups
from .latency_table import (RUNTIMES, LatencyTable, LayerSpec, candidate_counts, layer_specs, load_table,
                            measure_layer, save_table, table_key)
from .plan import ChannelPlan, apply_plan, compose_plans, make_plan

__all__ = ["NetAdaptConfig", "NetAdaptResult", "netadapt", "layer_channels", "predict_ms", "choose_count"]

Layout = dict[tuple[str, str], list[tuple[str, int]]]   # (layer, "in"|"out") -> [(group name, block)]


@dataclass
class NetAdaptConfig:
    latency_target: float                    # fraction of the measured latency to reach, in (0, 1)
    runtime: str = "torch"
    criterion: str = "l1"
    step: float = 0.05                       # latency each iteration saves, a fraction of the original
    count_step: int = 4                      # candidate counts: multiples of this (and min_channels)
    max_counts: int = 64                     # at most this many candidates per group (coarser steps beyond)
    min_channels: int = 1
    threads: int | None = None               # None: torch's current setting, fixed while measuring
    warmup: int = 5                          # whole-model measurements
    repeats: int = 30
    layer_warmup: int = 3                    # table entries: medians of few repeats
    layer_repeats: int = 9
    max_iterations: int = 200
    max_cut: float = 0.5                     # one iteration removes at most this fraction of a group's channels
    min_keep: float = 0.1                    # a group keeps at least this fraction of its original channels
    cache_dir: str | None = None             # None: $DEEPSHRINK_CACHE or ~/.cache/deepshrink
    seed: int = 0
    verbose: bool = False

    def check(self) -> None:
        if not 0.0 < self.latency_target < 1.0:
            raise ConfigError("latency target is the fraction of the latency kept, in (0, 1); "
                              f"got {self.latency_target}")
        if not 0.0 < self.step < 1.0:
            raise ConfigError(f"latency step is a fraction of the original latency, in (0, 1); got {self.step}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)} (the one measured), got {self.runtime!r}")
        if not (0.0 < self.max_cut <= 1.0 and 0.0 <= self.min_keep < 1.0):
            raise ConfigError(f"need max_cut in (0, 1] and min_keep in [0, 1) (got {self.max_cut}, {self.min_keep})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if min(self.count_step, self.max_counts, self.min_channels, self.repeats, self.layer_repeats,
               self.max_iterations) < 1:
            raise ConfigError("count_step, max_counts, min_channels, repeats and max_iterations must be >= 1")


@dataclass
class NetAdaptResult:
    model: nn.Module
    plan: ChannelPlan                        # on the original model's layers
    latency_before_ms: float                 # measured
    latency_after_ms: float                  # measured
    predicted_after_ms: float                # the last step's prediction, made before it was measured
    target_ms: float
    reached: bool
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels: dict[str, list[int]] = field(default_factory=dict)   # group name -> [before, after]
    frozen: dict[str, str] = field(default_factory=dict)
    iterations: list[dict] = field(default_factory=list)
    table_path: str | None = None
    table_measured: int = 0                  # entries measured in this run (the rest came from the cache)
    seconds: float = 0.0

    @property
    def latency_ratio(self) -> float:
        return self.latency_after_ms / self.latency_before_ms

    @property
    def predicted_ratio(self) -> float:
        return self.predicted_after_ms / self.latency_before_ms

    def summary(self) -> dict:
        return {"latency_before_ms": self.latency_before_ms, "latency_after_ms": self.latency_after_ms,
                "latency_ratio": self.latency_ratio, "predicted_after_ms": self.predicted_after_ms,
                "predicted_ratio": self.predicted_ratio, "target_ms": self.target_ms, "reached": self.reached,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "channels": self.channels, "iterations": self.iterations, "table": self.table_path,
                "table_measured": self.table_measured, "seconds": self.seconds}


# ----------------------------------------------------------------------------- the maths (pure)

def layer_channels(specs: Mapping[str, LayerSpec], layout: Layout, sizes: Mapping[str, int],
                   counts: Mapping[str, int]) -> dict[str, LayerSpec]:
    """Each layer's shape once every group g keeps ``counts[g]`` of its ``sizes[g]`` channels:
    a dim loses ``(size - count) * block`` indices per group it holds (a flatten's block is H*W)."""
    out = {}
    for name, spec in specs.items():
        cut = {d: sum((sizes[g] - counts[g]) * b for g, b in layout.get((name, d), ())) for d in ("in", "out")}
        out[name] = spec.with_channels(spec.in_channels - cut["in"], spec.out_channels - cut["out"])
    return out


def predict_ms(layer_ms: Mapping[str, float], residual_ms: float) -> float:
    """NetAdapt's prediction: the table entries of the layers, plus the measured rest."""
    return sum(layer_ms.values()) + residual_ms


def choose_count(predicted: Mapping[int, float], current_ms: float, saving_ms: float) -> int | None:
    """The largest count whose predicted latency saves at least ``saving_ms`` on ``current_ms``
    (None if none does): a count that saves less, such as one off the blocked kernels, is skipped."""
    ok = [c for c, ms in predicted.items() if current_ms - ms >= saving_ms]
    return max(ok) if ok else None


# ----------------------------------------------------------------------------- orchestration

def _layout(groups: list[Group], specs: Mapping[str, LayerSpec]) -> Layout:
    layout: Layout = {}
    for g in groups:
        for m in g.members:
            if m.module in specs:
                layout.setdefault((m.module, m.dim), []).append((g.name, m.block))
    return layout


def _interleaved_ratio(original: nn.Module, model: nn.Module, example_input, cfg: NetAdaptConfig,
                       threads: int) -> float:
    """``model``'s latency over the original's, the two timed side by side (A B A B ..., median of
    the per-pair ratios), so that a change in the machine's speed between measurements cancels."""
    cmp = compare_latency(original, model, example_input, cfg.warmup, cfg.repeats, threads)
    return 1.0 / cmp.ratio_median


def _counts(model: nn.Module, example_input) -> tuple[int, int]:
    t = profile_model(model, example_input[:1]).totals
    return int(t["macs"]), int(t["params"])


class _Predictor:
    """Predicted latency of channel counts: table lookups (measured on a miss) plus the residual."""

    def __init__(self, table: LatencyTable, specs, layout: Layout, sizes: dict[str, int],
                 measure: Callable[[LayerSpec], float]):
        self.table, self.specs, self.layout, self.sizes, self.measure = table, specs, layout, sizes, measure
        self.residual, self.scale = 0.0, 1.0

    def calibrate(self, counts: Mapping[str, int], measured_ms: float) -> None:
        """Match the prediction to a whole-model measurement: the rest as an additive residual
        (NetAdapt), or, where the layers timed alone add up to more than the whole model (no
        rest left), a scale on their sum, so that no prediction goes below zero."""
        self.residual, self.scale = 0.0, 1.0
        layers = self(counts)
        if measured_ms >= layers:
            self.residual = measured_ms - layers
        elif layers > 0:
            self.scale = measured_ms / layers

    def __call__(self, counts: Mapping[str, int]) -> float:
        shapes = layer_channels(self.specs, self.layout, self.sizes, counts)
        layer_ms = {n: self.scale * self.table.latency(s, self.measure) for n, s in shapes.items()}
        return predict_ms(layer_ms, self.residual)


def netadapt(model: nn.Module, example_input: torch.Tensor, cfg: NetAdaptConfig,
             score: Callable[[nn.Module], float], *, measure: Callable[[nn.Module], float] | None = None,
             measure_layer_ms: Callable[[LayerSpec], float] | None = None,
             tune: Callable[[nn.Module], None] | None = None) -> NetAdaptResult:
    """Shrink a copy of ``model`` until its measured latency on ``example_input`` (whose batch is
    the batch size measured) is at most ``cfg.latency_target`` of the original's.

    ``score(model)``: higher is better (the caller's validation accuracy); ``measure(model)``:
    whole-model milliseconds (default: :func:`measure_latency`'s median); ``measure_layer_ms(spec)``:
    a table entry's milliseconds (default: :func:`.latency_table.measure_layer`); ``tune(model)``:
    NetAdapt's short-term fine-tuning of the chosen model, in place, after each iteration, so the
    next iteration's proposals are scored on a recovered model (the result's ``model`` then holds
    tuned weights, which ``apply_plan(original, plan)`` would not)."""
    cfg.check()
    t0 = time.perf_counter()
    threads = cfg.threads or torch.get_num_threads()
    interleaved = measure is None
    measure = measure or (lambda m: measure_latency(m, example_input, cfg.warmup, cfg.repeats, threads).median_ms)
    measure_layer_ms = measure_layer_ms or (lambda s: measure_layer(s, threads, cfg.layer_warmup, cfg.layer_repeats))
    crit = get_criterion(cfg.criterion, cfg.seed)
    current = copy.deepcopy(model).eval()

    groups = build_groups(current, example_input)
    scores = score_groups(groups, crit)
    sizes = {g.name: g.size for g in groups if g.id in scores}
    counts = dict(sizes)
    frozen = {g.name: g.frozen or "the criterion gives no scores" for g in groups if g.id not in scores}
    specs = layer_specs(current, example_input)
    table = load_table(table_key(model, example_input, cfg.runtime, threads), cfg.cache_dir)
    predict = _Predictor(table, specs, _layout([g for g in groups if g.id in scores], specs), sizes, measure_layer_ms)
    for name, size in sizes.items():       # the table NetAdapt starts from: each group's counts, others whole
        for c in candidate_counts(size, cfg.count_step, cfg.min_channels, cfg.max_counts):
            predict({**counts, name: c})

    original = model.eval()
    before = float(measure(current))
    if interleaved:     # every later measurement: a ratio to the original timed side by side, times this
        measure = lambda m: before * _interleaved_ratio(original, m, example_input, cfg, threads)  # noqa: E731
    measured = before
    predict.calibrate(counts, before)
    target, step = cfg.latency_target * before, cfg.step * before
    macs0, params0 = _counts(current, example_input)
    plan, iterations, saved = ChannelPlan(), [], 0
    while measured > target and len(iterations) < cfg.max_iterations:
        saving = min(step, measured - target)
        now = predict(counts)
        groups = build_groups(current, example_input)
        scores = score_groups(groups, crit)
        proposals, fallback = [], []

        def cut(g: Group, c: int) -> tuple[ChannelPlan, nn.Module]:
            """Group g cut to its top c channels by the criterion: (the step's plan, the cut copy)."""
            keep = torch.topk(scores[g.id], c).indices.sort().values
            step_plan = make_plan(groups, {g.id: keep})
            return step_plan, apply_plan(copy.deepcopy(current), step_plan)

        for g in groups:
            if g.name not in counts or g.id not in scores:
                continue
            floor = max(cfg.min_channels, math.ceil(cfg.min_keep * sizes[g.name]),
                        math.ceil((1 - cfg.max_cut) * counts[g.name]))
            cands = [c for c in candidate_counts(counts[g.name], cfg.count_step, cfg.min_channels, cfg.max_counts)
                     if c >= floor]
            preds = {c: predict({**counts, g.name: c}) for c in cands}
            c = choose_count(preds, now, saving)
            if c is None and preds and min(preds.values()) < now:
                c = min(preds, key=preds.get)     # the step is out of this group's reach: its largest saving
            if c is None:
                if cands:                         # no saving predicted: its largest cut, to be measured
                    fallback.append((g, min(cands)))
                continue
            step_plan, candidate = cut(g, c)
            proposals.append((float(score(candidate)), -preds[c], g.name, c, step_plan, candidate))
        by_measure = not proposals
        for g, c in fallback if by_measure else ():
            step_plan, candidate = cut(g, c)
            ms = float(measure(candidate))
            if measured - ms >= saving / 2:
                proposals.append((float(score(candidate)), -ms, g.name, c, step_plan, candidate))
        if not proposals:
            break
        n_proposals = len(proposals)
        s, neg_pred, name, c, step_plan, current = max(proposals, key=lambda p: (p[0], p[1]))
        proposals.clear()                      # the losing candidates' memory
        if tune is not None:
            tune(current)
            # training may leave conv weights channels_last (train.fit does): measured against the
            # original in its own layout, the ratio would credit the layout, not the cut
            current.to(memory_format=torch.contiguous_format).eval()
        counts[name] = c
        plan = compose_plans(plan, step_plan)
        measured = float(measure(current))
        predict.calibrate(counts, measured)   # the rest (or the scale) follows each measurement, as NetAdapt re-measures
        iterations.append({"iteration": len(iterations) + 1, "group": name, "channels": c, "score": s,
                           "predicted_ms": -neg_pred, "measured_ms": measured, "proposals": n_proposals,
                           "measured": by_measure})
        if cfg.verbose:
            print(f"netadapt {len(iterations)}: group {name!r} -> {c} channels, score {s:.4f}, latency "
                  f"{'measured as a proposal' if by_measure else 'predicted'} {-neg_pred:.3f} ms, measured "
                  f"{measured:.3f} ms (target {target:.3f})", flush=True)
        if table.measured > saved:          # a long run keeps what it measured, even if stopped
            save_table(table)
            saved = table.measured
    path = save_table(table) if table.measured > saved else table.path
    macs1, params1 = _counts(current, example_input)
    predicted = iterations[-1]["predicted_ms"] if iterations else predict(counts)   # before its measurement
    return NetAdaptResult(current, plan, before, measured, predicted, target, measured <= target,
                          macs0, macs1, params0, params1, {n: [sizes[n], counts[n]] for n in sizes}, frozen,
                          iterations, str(path) if path else None, table.measured, time.perf_counter() - t0)
