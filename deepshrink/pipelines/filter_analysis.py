"""``deepshrink filter-analysis`` as one call: the analyses of Li et al. 2017 ("Pruning Filters for
Efficient ConvNets", section 3 and Figure 2) on a model file, plus the lab's channel-sorting test.

Each analysis is one function returning plain data (numbers and names, JSON-ready), with a plot
function beside it in :mod:`.filter_plots`:

* ``sensitivity``: each prunable conv group alone, its smallest-L1 filters removed at each ratio;
  accuracy without retraining and, with ``retrain_epochs`` > 0, after that many epochs of
  fine-tuning (:func:`deepshrink.prune.prune_channels_and_finetune`) (Fig. 2(b), 2(c));
* ``norms``: per conv layer, the filters' L1 norms sorted descending, divided by the largest (Fig. 2(a));
* ``greedy``: all conv groups pruned at once, the next layer's filters scored independently (all
  kernels) or greedily (without the kernels of maps already removed) (section 3.2,
  :mod:`deepshrink.prune.greedy`);
* ``selection``: all conv groups at once, removing the smallest-L1, random (seeded draws, mean) or
  largest-L1 filters (the comparison of section 4.1);
* ``sorting``: the lab's experiment: keep the first k channels of every conv group, with and without
  first reordering them by importance (:func:`deepshrink.prune.sort_channels`, the next layer's
  input-channel norm). Sorting is a permutation: the sorted model computes what the original does.

"Prunable conv group": a coupled group (:mod:`deepshrink.prune.graph`) whose channels some
convolution produces; frozen groups and groups only linear layers produce are left whole. Every
accuracy is measured on the validation split carved from the training split
(:func:`deepshrink.data.with_validation`), never on the test split; retraining uses the rest of the
training split. At ratio 0 nothing is removed (nor retrained): the accuracy is the unpruned one.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..atomic import atomic_write_text
from ..data import Dataset, check_val_size, for_selection, val_label, with_validation
from ..errors import ConfigError, ModelError
from ..holdout import warn_if_trained_on
from ..prune import ChannelConfig, prune_channels_and_finetune, sort_channels
from ..prune.channel import choose_channels, score_groups
from ..prune.criteria import CRITERIA, random_scores
from ..prune.graph import Group, build_groups
from ..prune.greedy import greedy_l1_scores
from ..prune.plan import apply_plan, make_plan
from ..train import evaluate
from .defaults import finetune_settings
from .filter_plots import PLOTTERS
from .inputs import open_model_and_data

__all__ = ["ANALYSES", "DEFAULT_RATIOS", "FilterAnalysisConfig", "FilterAnalysisResult", "conv_groups",
           "analyse_sensitivity", "analyse_norms", "analyse_greedy", "analyse_selection", "analyse_sorting",
           "selection_keep", "first_keep", "run_filter_analysis", "filter_analysis_file", "output_files"]

ANALYSES = ("sensitivity", "norms", "greedy", "selection", "sorting")
DEFAULT_RATIOS = tuple(round(0.1 * k, 1) for k in range(1, 10))          # 0.1, 0.2, ..., 0.9
SELECTIONS = ("smallest", "random", "largest")


@dataclass
class FilterAnalysisConfig:
    """Every default of a filter analysis in one place."""

    analyses: tuple[str, ...] = ANALYSES
    ratios: tuple[float, ...] = DEFAULT_RATIOS       # fraction of each group's filters removed
    retrain_epochs: int = 0                          # sensitivity: fine-tuning epochs after each cut (0: none)
    random_draws: int = 3                            # selection: seeded random draws, averaged
    sort_criterion: str = "fro"                      # sorting: the lab's next-layer input-channel norm
    val_size: int | None = None                      # None: 10% of the training split, at most 5,000
    seed: int = 0
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown or not self.analyses or len(set(self.analyses)) != len(self.analyses):
            raise ConfigError(f"analyses {','.join(self.analyses) or '(none)'}: give each of {', '.join(ANALYSES)} "
                              "at most once" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        if not self.ratios or any(not (isinstance(r, (int, float)) and 0.0 <= r < 1.0) for r in self.ratios):
            raise ConfigError(f"ratios are fractions of filters removed, in [0, 1); got {list(self.ratios)}")
        if isinstance(self.retrain_epochs, bool) or not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 0:
            raise ConfigError(f"retrain epochs must be a whole number >= 0, got {self.retrain_epochs!r}")
        if isinstance(self.random_draws, bool) or not isinstance(self.random_draws, int) or self.random_draws < 1:
            raise ConfigError(f"random draws must be a whole number >= 1, got {self.random_draws!r}")
        if self.sort_criterion not in CRITERIA or self.sort_criterion == "random":
            raise ConfigError(f"sort criterion {self.sort_criterion!r}: choose one of "
                              f"{', '.join(c for c in CRITERIA if c != 'random')}")
        check_val_size(self.val_size, "val_size")


@dataclass
class FilterAnalysisResult:
    report: dict                                     # everything filter_analysis.json holds
    json_path: Path
    plots: dict[str, Path] = field(default_factory=dict)


def output_files(out_dir: str | os.PathLike, analyses=ANALYSES, retrain: bool = False) -> dict[str, Path]:
    """The files a run writes into ``out_dir``: ``json`` and one PNG per analysis (two for a
    retrained sensitivity scan)."""
    d = Path(out_dir)
    files = {"json": d / "filter_analysis.json"}
    for a in analyses:
        files[a] = d / f"filter_{a}.png"
        if a == "sensitivity" and retrain:
            files["sensitivity_retrained"] = d / "filter_sensitivity_retrained.png"
    return files


# ----------------------------------------------------------------------------- shared pieces

def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def conv_groups(model: nn.Module, example) -> tuple[list[Group], list[int]]:
    """The model's groups and the ids of its prunable conv groups; ModelError when there are none."""
    if not any(_is_conv(m) for m in model.modules()):
        raise ModelError("the model has no convolution layer: filter analyses need conv filters")
    groups = build_groups(model, example)
    ids = [g.id for g in groups if g.prunable and any(
        m.dim == "out" and _is_conv(g.modules[m.module]) and g.modules[m.module].weight.dim() >= 2 for m in g.members)]
    if not ids:
        why = sorted({g.frozen for g in groups if g.frozen})
        raise ModelError("no prunable conv group: every conv layer's channels are coupled to something that "
                         f"cannot be cut ({'; '.join(why[:3]) or 'no conv layer produces channels'})")
    return groups, ids


def _accuracy(model: nn.Module, groups: list[Group], keep: dict, split) -> float:
    """Validation accuracy of a copy of ``model`` keeping ``keep[group id]`` channels."""
    return evaluate(apply_plan(copy.deepcopy(model), make_plan(groups, keep)), split)


def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr, delay=1.0)


def _head(ratios, dense: float) -> dict:
    return {"ratios": [float(r) for r in ratios], "dense": dense, "split": "validation"}


# ----------------------------------------------------------------------------- the analyses

def analyse_sensitivity(model: nn.Module, example, ds: Dataset, ratios, retrain: ChannelConfig | None = None,
                        progress: bool = True) -> dict:
    """Each prunable conv group alone at each ratio (smallest L1); ``retrain`` (a ChannelConfig with
    ``epochs`` > 0): also the accuracy after fine-tuning on ``ds.train``. Accuracy on ``ds.val``."""
    groups, ids = conv_groups(model, example)
    scores = score_groups(groups, "l1")
    dense = evaluate(model, ds.val)
    out = {**_head(ratios, dense), "criterion": "l1", "retrain_epochs": retrain.epochs if retrain else 0,
           "layers": {}}
    by_id = {g.id: g for g in groups}
    bar = _bar(len(ids) * len(ratios), "sensitivity", progress)
    for gid in ids:
        g = by_id[gid]
        rec = {"channels": g.size, "kept": [], "accuracy": []}
        if retrain:
            rec["accuracy_retrained"] = []
        for r in ratios:
            keep = choose_channels(groups, {gid: scores[gid]}, r)
            rec["kept"].append(len(keep[gid]))
            rec["accuracy"].append(_accuracy(model, groups, keep, ds.val))
            if retrain:
                rec["accuracy_retrained"].append(dense if r == 0 else _retrained(model, example, ds, g, r, retrain))
            bar.update(1)
        out["layers"][g.name] = rec
    bar.close()
    return out


def _retrained(model, example, ds: Dataset, group: Group, ratio: float, retrain: ChannelConfig) -> float:
    cfg = replace(retrain, ratio={group.name: float(ratio)}, macs_target=None, criterion="l1", scope="layer",
                  rounds=1, max_drop=None, progress=False, verbose=False)
    return prune_channels_and_finetune(copy.deepcopy(model), for_selection(ds), example, cfg).accuracy_after


def analyse_norms(model: nn.Module) -> dict:
    """Per conv layer: its filters' L1 norms sorted descending, and divided by the largest."""
    layers = {}
    for name, m in model.named_modules():
        if _is_conv(m) and m.weight is not None:
            l1 = m.weight.detach().abs().float().flatten(1).sum(1).sort(descending=True).values   # (C_out,)
            top = float(l1[0]) if len(l1) else 0.0
            layers[name] = {"filters": len(l1), "l1": l1.tolist(),
                            "normalised": (l1 / top).tolist() if top > 0 else [0.0] * len(l1)}
    if not layers:
        raise ModelError("the model has no convolution layer: filter analyses need conv filters")
    return {"criterion": "l1", "layers": layers}


def analyse_greedy(model: nn.Module, example, ds: Dataset, ratios, progress: bool = True) -> dict:
    """All conv groups at each ratio, the filters scored independently or greedily (section 3.2)."""
    groups, ids = conv_groups(model, example)
    scores = score_groups(groups, "l1")
    indep_scores = {gid: scores[gid] for gid in ids}
    out = {**_head(ratios, evaluate(model, ds.val)), "layers": [g.name for g in groups if g.id in ids],
           "independent": [], "greedy": [], "same_choice": []}
    bar = _bar(len(ratios), "greedy vs independent", progress)
    for r in ratios:
        indep = choose_channels(groups, indep_scores, r)
        _, greedy = greedy_l1_scores(groups, ids, r)
        out["independent"].append(_accuracy(model, groups, indep, ds.val))
        out["greedy"].append(_accuracy(model, groups, greedy, ds.val))
        both = sum(len(set(indep[i].tolist()) & set(greedy[i].tolist())) for i in ids)
        out["same_choice"].append(both / max(1, sum(len(indep[i]) for i in ids)))   # kept by both / kept
        bar.update(1)
    bar.close()
    return out


def selection_keep(groups: list[Group], ids: list[int], ratio: float, how: str, seed: int = 0
                   ) -> dict[int, torch.Tensor]:
    """Channels each group ``ids`` keeps when its ``ratio`` smallest-L1, largest-L1 or random filters go."""
    if how not in SELECTIONS:
        raise ConfigError(f"selection {how!r}: choose one of {', '.join(SELECTIONS)}")
    by_id = {g.id: g for g in groups}
    l1 = score_groups([by_id[i] for i in ids], "l1")
    if how == "smallest":
        scores = l1
    elif how == "largest":
        scores = {i: -s for i, s in l1.items()}                     # keeping the top of -L1 drops the largest
    else:
        scores = {i: random_scores(by_id[i], seed) for i in l1}
    return choose_channels(groups, scores, ratio)


def analyse_selection(model: nn.Module, example, ds: Dataset, ratios, draws: int = 3, seed: int = 0,
                      progress: bool = True) -> dict:
    """All conv groups at each ratio: remove the smallest-L1, random (``draws`` seeded draws) or
    largest-L1 filters; accuracy without retraining."""
    groups, ids = conv_groups(model, example)
    out = {**_head(ratios, evaluate(model, ds.val)), "seeds": [seed + d for d in range(draws)],
           "smallest": [], "random": [], "random_draws": [], "largest": []}
    bar = _bar(len(ratios) * (2 + draws), "smallest vs random vs largest", progress)
    for r in ratios:
        for how in ("smallest", "largest"):
            out[how].append(_accuracy(model, groups, selection_keep(groups, ids, r, how), ds.val))
            bar.update(1)
        accs = []
        for d in range(draws):
            accs.append(_accuracy(model, groups, selection_keep(groups, ids, r, "random", seed + d), ds.val))
            bar.update(1)
        out["random_draws"].append(accs)
        out["random"].append(sum(accs) / len(accs))
    bar.close()
    return out


def first_keep(groups: list[Group], ids: list[int], ratio: float) -> dict[int, torch.Tensor]:
    """Keep the first k channels of each group (the lab's ``channel_prune``): scores falling with the index."""
    by_id = {g.id: g for g in groups}
    return choose_channels(groups, {i: -torch.arange(by_id[i].size, dtype=torch.float32) for i in ids}, ratio)


def analyse_sorting(model: nn.Module, example, ds: Dataset, ratios, criterion: str = "fro",
                    progress: bool = True) -> dict:
    """Keep the first k channels of every conv group, with and without sorting them by importance first."""
    groups, ids = conv_groups(model, example)
    ordered, _ = sort_channels(model, example, criterion)
    s_groups, s_ids = conv_groups(ordered, example)
    out = {**_head(ratios, evaluate(model, ds.val)), "criterion": criterion,
           "sorted_dense": evaluate(ordered, ds.val), "unsorted": [], "sorted": []}
    bar = _bar(2 * len(ratios), "with and without sorting", progress)
    for r in ratios:
        out["unsorted"].append(_accuracy(model, groups, first_keep(groups, ids, r), ds.val))
        bar.update(1)
        out["sorted"].append(_accuracy(ordered, s_groups, first_keep(s_groups, s_ids, r), ds.val))
        bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------- a run

def run_filter_analysis(model: nn.Module, ds: Dataset, cfg: FilterAnalysisConfig, out_dir: str | os.PathLike,
                        retrain: ChannelConfig | None = None, source: str | os.PathLike | None = None
                        ) -> FilterAnalysisResult:
    """Run ``cfg.analyses`` on ``model`` (left unchanged) with ``ds``'s validation split (carved
    with ``cfg.val_size`` unless ``ds`` has one); write the JSON and the PNGs into ``out_dir``.
    ``retrain``: the fine-tuning settings of the retrained sensitivity scan (its ``epochs`` is
    ``cfg.retrain_epochs``; default: ChannelConfig's)."""
    cfg.check()
    ds = with_validation(ds, cfg.val_size)
    example = ds.val.x[:1]
    conv_groups(model, example)                              # one error before any work
    if cfg.retrain_epochs > 0:
        retrain = replace(retrain or ChannelConfig(), epochs=cfg.retrain_epochs, seed=cfg.seed)
    else:
        retrain = None
    label = val_label(ds)
    if cfg.verbose:
        print(f"filter analysis ({', '.join(cfg.analyses)}) on {label}", flush=True)
    torch.manual_seed(cfg.seed)
    runs = {
        "sensitivity": lambda: analyse_sensitivity(model, example, ds, cfg.ratios, retrain, cfg.progress),
        "norms": lambda: analyse_norms(model),
        "greedy": lambda: analyse_greedy(model, example, ds, cfg.ratios, cfg.progress),
        "selection": lambda: analyse_selection(model, example, ds, cfg.ratios, cfg.random_draws, cfg.seed,
                                               cfg.progress),
        "sorting": lambda: analyse_sorting(model, example, ds, cfg.ratios, cfg.sort_criterion, cfg.progress),
    }
    results = {name: runs[name]() for name in cfg.analyses}
    files = output_files(out_dir, cfg.analyses, retrain is not None)
    files["json"].parent.mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, data in results.items():
        PLOTTERS[name](data, files[name])
        plots[name] = files[name]
        if name == "sensitivity" and retrain is not None:
            PLOTTERS[name](data, files["sensitivity_retrained"], retrained=True)
            plots["sensitivity_retrained"] = files["sensitivity_retrained"]
    report = {"file": None if source is None else os.fspath(source), "metric": "accuracy", "split": "validation",
              "evaluated_on": label, "val_images": len(ds.val),
              "data": ds.name, "dense": evaluate(model, ds.val), "ratios": [float(r) for r in cfg.ratios],
              "seed": cfg.seed, "analyses": results, "plots": {k: os.fspath(v) for k, v in plots.items()}}
    atomic_write_text(files["json"], json.dumps(report, indent=1) + "\n")
    return FilterAnalysisResult(report, files["json"], plots)


def filter_analysis_file(src: str | os.PathLike, out_dir: str | os.PathLike, cfg: FilterAnalysisConfig | None = None,
                         *, data: str | None = None, arch: str | None = None, trust_code: bool = False,
                         seq_len: int | None = None, tokenizer: str | None = None,
                         model_kwargs: dict | None = None) -> FilterAnalysisResult:
    """The analyses of the model in ``src`` on ``data`` (default: the data set the file records),
    written into ``out_dir``; retraining uses the model's channel-pruning fine-tuning settings
    (:func:`.defaults.finetune_settings`)."""
    cfg = cfg or FilterAnalysisConfig()
    cfg.check()
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer,
                                          model_kwargs=model_kwargs)
    ds = with_validation(ds, cfg.val_size)
    try:
        conv_groups(model, ds.val.x[:1])                     # before the warning: one error line
    except ModelError as exc:
        raise ModelError(f"{src}: {exc}") from None
    warn_if_trained_on(src, info, ds)
    tune = finetune_settings("prune_channels", info)
    retrain = ChannelConfig(lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment,
                            label_smoothing=tune.label_smoothing, seed=cfg.seed)
    return run_filter_analysis(model, ds, cfg, out_dir, retrain, source=src)
