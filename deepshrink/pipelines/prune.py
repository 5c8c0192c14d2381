"""``deepshrink prune`` as one call: fine-grained pruning of a model file with fine-tuning, the
masks kept in the written file (Han et al. 2015; AGP: Zhu & Gupta 2017).

Fine-tuning follows the model's recorded training (:func:`.defaults.finetune_settings`,
method ``prune``) unless :class:`.defaults.Finetune` overrides it. With ``auto`` the per-layer
sparsities come from a sensitivity scan (the least sensitive layers, weighted by their parameter
count, go furthest), scanned on a validation split carved from the training split; those images
are then held out of the fine-tuning too, so the choice never sees an image it was tuned on or the
test split (on text, by fidelity to the unpruned model). With ``teacher`` (a model file) or ``cfg.distill`` (the unpruned model) the
fine-tuning distils from a teacher's soft targets (Hinton et al. 2015).

Unlabelled data (``text:FILE``) has no accuracy to fine-tune for or to report: the fine-tuning
distils from the unpruned model (:func:`deepshrink.distill.fidelity_loss.cached_fidelity_loss`:
cosine of the embeddings, or KL of the logits), and the run reports its fidelity to the unpruned
model on the test split (:func:`deepshrink.fidelity.fidelity`), right after a one-shot pruning to
the same targets (a copy, what pruning alone does) and after the fine-tuning. A model made of
repeated blocks (a transformer) is also pulled towards the unpruned model's output at every block
(:mod:`deepshrink.distill.hidden`, weight ``TEXT_HIDDEN_WEIGHT``; ``cfg.hidden_weight`` overrides).
"""

from __future__ import annotations

import os
import copy
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ..data import Dataset, with_validation
from ..distill import cached_teacher_loss
from ..distill.fidelity_loss import cached_fidelity_loss, dropout_off
from ..distill.hidden import repeated_blocks
from ..distill.losses import check_settings
from ..errors import ConfigError
from ..fidelity import Fidelity, fidelity
from ..holdout import warn_if_trained_on
from ..io import ModelInfo, load_teacher, save_model
from ..plots import plot_weight_histograms
from ..prune import DEFAULT_GRID, PruneConfig, choose_sparsities, layer_sparsities, prune_and_finetune
from ..prune.finetune import RECONSTRUCT, PruneResult, resolve_rule
from ..prune.fine import RULES
from ..scoring import scorer_for
from ..prune.fine import prune_
from ..prune.threshold import check_sparsity_map, resolve_layer_names, std_threshold_sparsities
from ..targets import prunable_weights
from ..train import evaluate
from .defaults import TEXT_HIDDEN_WEIGHT, Finetune, finetune_settings
from .inputs import open_model_and_data
from .sensitivity import ScanConfig, run_scan

__all__ = ["PruneRun", "prune_file", "AUTO_GRID", "PLOT_FILES", "auto_scan_dir"]

AUTO_GRID = tuple(sorted(set(DEFAULT_GRID) | {0.95, 0.98}))   # the scan behind ``auto``
PLOT_FILES = ("weights_all.png", "weights_nonzero.png")


@dataclass
class PruneRun:
    model: nn.Module                    # the pruned model, masks attached
    info: ModelInfo                     # what was written beside it
    result: PruneResult
    layers: dict[str, float]            # sparsity per layer
    scan: dict | None = None            # the scan ``auto`` chose from
    plots: Path | None = None           # the folder holding the weight histograms
    fidelity: dict[str, Fidelity] | None = None  # unlabelled data: {"pruned", "after"} against the unpruned model
    scan_dir: Path | None = None        # auto: the folder holding sensitivity.json and sensitivity.png


def auto_scan_dir(out: str | os.PathLike, plots: str | os.PathLike | None) -> Path:
    """Where ``auto``'s scan goes: the plots folder, else ``sensitivity/`` beside ``out``."""
    return Path(plots) if plots is not None else Path(out).parent / "sensitivity"


def _teacher_loss(path, ds: Dataset, cfg: PruneConfig, arch: str | None, trust_code: bool):
    """KD from a teacher file (its logits for the training split cached when fine-tuning does not
    augment)."""
    teacher = load_teacher(path, ds, arch, trust_code)
    loss_fn = cached_teacher_loss(teacher, ds.train, cfg.augment, cfg.kd_temperature, cfg.kd_alpha,
                                  progress=cfg.progress, verbose=cfg.verbose)
    if cfg.verbose:
        acc = evaluate(teacher, ds.test, progress=cfg.progress, desc="teacher test accuracy")
        print(f"teacher {path}: {acc * 100:.2f}% on the test images"
              + ("; its training-set logits cached" if loss_fn.targets.cache is not None else ""), flush=True)
    return loss_fn


def _plan_line(cfg: PruneConfig, teacher) -> str:
    """What pruning and fine-tuning are about to do, in one line (said before they start)."""
    what = (f"{cfg.sparsity:.1%} sparsity" if not isinstance(cfg.sparsity, dict) else
            f"the per-layer sparsities of {len(cfg.sparsity)} weights")
    if cfg.epochs == 0:
        return f"pruning to {what} ({cfg.rule}, {cfg.scope} scope), no fine-tuning (0 epochs) ..."
    how = {"agp": f"AGP raises the sparsity from 0 over the first {cfg.agp_fraction:.0%} of the steps, "
                  "then the masks stay fixed",
           "oneshot": "pruned at once, then the masks stay fixed",
           "iterative": f"in {max(1, min(cfg.rounds, cfg.epochs))} rounds, the masks fixed between them"}
    loss = (f"; distilling from {teacher}" if teacher else
            "; distilling from the unpruned model" if cfg.distill else
            f"; {cfg.penalty} penalty {cfg.penalty_lambda:g}" if cfg.penalty else "")
    return (f"pruning to {what} ({cfg.rule}, {cfg.scope} scope) while fine-tuning {cfg.epochs} "
            f"epoch{'s' if cfg.epochs != 1 else ''} ({how.get(cfg.schedule, cfg.schedule)}; {'AdamW' if cfg.optimizer == 'adam' else 'SGD'}, lr {cfg.lr:g}, "
            f"weight decay {cfg.weight_decay:g}, augment {'on' if cfg.augment else 'off'}{loss}) ...")


def _check_unlabelled(ds: Dataset, cfg: PruneConfig, teacher) -> None:
    """What unlabelled data cannot do: a penalty added to cross-entropy, a teacher file (the
    unpruned model is the teacher). ``auto``'s scan scores fidelity to the unpruned model instead."""
    if cfg.penalty:
        raise ConfigError(f"{ds.name}: text has no labels; a weight penalty is added to cross-entropy, "
                          "which needs them (fine-tuning on text distils from the unpruned model)")
    if teacher:
        raise ConfigError(f"{ds.name}: text has no labels; fine-tuning on text distils from the unpruned "
                          "model itself, not from a teacher file")


def _pruned_only(model: nn.Module, reference: nn.Module, ds: Dataset, cfg: PruneConfig) -> Fidelity:
    """Fidelity of a one-shot pruned copy (the same targets, rule and seed), before any fine-tuning:
    what AGP, which never holds a pruned-only model, is compared with."""
    pruned = copy.deepcopy(model)
    prune_(pruned, cfg.sparsity, cfg.rule, cfg.scope, cfg.seed, include=cfg.include, exclude=cfg.exclude)
    return fidelity(pruned, reference, ds.test.x)


def prune_file(src: str | os.PathLike, out: str | os.PathLike, cfg: PruneConfig | None = None, *,
               finetune: Finetune | None = None, auto: ScanConfig | None = None,
               teacher: str | os.PathLike | None = None, plots: str | os.PathLike | None = None,
               data: str | None = None, arch: str | None = None, trust_code: bool = False,
               seq_len: int | None = None, tokenizer: str | None = None, model_kwargs: dict | None = None) -> PruneRun:
    """Prune the model in ``src`` to ``cfg.sparsity``, fine-tune it and write it to ``out``.

    ``cfg``'s lr, weight_decay and augment are replaced by :func:`.defaults.finetune_settings`
    (the model's own training, or ``finetune``'s choices). ``auto``: per-layer sparsities from a
    scan with these settings on the validation split (written into ``plots``, else
    ``sensitivity/`` beside ``out``), whose images the fine-tuning then leaves out; ``plots``: a
    folder for the weight histograms. The accuracies reported are on the test split; on
    unlabelled data (text) the fine-tuning distils from the unpruned model and the run reports
    fidelity to it instead (``PruneRun.fidelity``; ``result``'s accuracies are None).
    """
    cfg = cfg or PruneConfig()
    if auto is not None:
        if cfg.scope == "global":
            raise ConfigError("auto chooses one sparsity per layer; it cannot be combined with scope 'global'")
        auto.check()
    if cfg.distill and teacher:
        raise ConfigError("give distill (the unpruned model as teacher) or a teacher file, not both")
    check_settings(cfg.kd_temperature, cfg.kd_alpha, "kl")
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer, model_kwargs=model_kwargs,
                                         need_labels=False)
    if not ds.labelled:
        _check_unlabelled(ds, cfg, teacher)
    cfg = resolve_rule(cfg, ds)                        # magnitude + AGP, or reconstruct + oneshot on text
    weights = prunable_weights(model, cfg.include, cfg.exclude)  # a glob matching no weight fails now, not after a scan
    cfg = hand_targets(cfg, weights, auto is not None)
    scan = None
    if auto is not None:
        ds = with_validation(ds, auto.val_size)     # scanned on; held out of the fine-tuning below
        warn_if_trained_on(src, info, ds)
        # scan exactly what will be pruned; a data-free rule ranks the layers (reconstruct scans by magnitude)
        auto = replace(auto, include=cfg.include, exclude=cfg.exclude,
                       rule=cfg.rule if cfg.rule in RULES else "magnitude")
        scan_dir = auto_scan_dir(out, plots)
        if cfg.verbose:
            print(f"auto: a sensitivity scan chooses the per-layer sparsities; its curves go to "
                  f"{scan_dir / 'sensitivity.json'} and {scan_dir / 'sensitivity.png'}", flush=True)
        scan = run_scan(model, ds, auto, scan_dir)
        target = choose_sparsities(scan, target_sparsity=cfg.sparsity)
        if cfg.verbose:
            print("per-layer sparsities: " + ", ".join(f"{k} {v:.3f}" for k, v in target.items())
                  + f" (scan and plot in {scan_dir})", flush=True)
        cfg = replace(cfg, sparsity=target, scope="layer")
    tune = finetune_settings("prune", info, finetune, unlabelled=not ds.labelled)
    cfg = replace(cfg, lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment, optimizer=tune.optimizer,
                  warmup_epochs=tune.warmup_epochs, batch_size=tune.batch_size or cfg.batch_size)
    if not ds.labelled:
        return _prune_unlabelled(model, info, ds, cfg, out, plots)
    loss_fn = _teacher_loss(teacher, ds, cfg, arch, trust_code) if teacher else None
    if cfg.verbose:
        print(_plan_line(cfg, teacher), flush=True)
    result = prune_and_finetune(model, ds, cfg, loss_fn=loss_fn)
    chosen_on = {"scan_on": scan["evaluated_on"], "val_images": scan["val_images"]} if scan is not None else {}
    info.record("prune", cfg, accuracy=result.accuracy_after, **({"teacher": str(teacher)} if teacher else {}),
                **{k: v for k, v in result.to_dict().items() if k != "fits"}, accuracy_on="test", **chosen_on)
    save_model(model, out, info)
    return PruneRun(model, info, result, layer_sparsities(model), scan, _plots(model, plots),
                    scan_dir=auto_scan_dir(out, plots) if scan is not None else None)


def hand_targets(cfg: PruneConfig, weights: dict, auto: bool = False) -> PruneConfig:
    """``cfg`` with a per-layer sparsity map for every target weight when the user gave one by hand:
    a map by layer or weight name (weights left out: 0), or ``threshold_std`` (prune/threshold.py)."""
    if cfg.threshold_std is None and cfg.threshold_scale:
        raise ConfigError("threshold scales multiply threshold_std: give it too")
    if cfg.threshold_std is not None:
        if auto:
            raise ConfigError("auto chooses the per-layer sparsities; it cannot be combined with a std threshold")
        return replace(cfg, sparsity=std_threshold_sparsities(weights, cfg.threshold_std, cfg.threshold_scale),
                       scope="layer")
    if isinstance(cfg.sparsity, dict):
        if auto:
            raise ConfigError("auto chooses the per-layer sparsities; give one target sparsity with it, not a map")
        check_sparsity_map(cfg.sparsity)
        given = resolve_layer_names(cfg.sparsity, weights, "sparsity map")
        return replace(cfg, sparsity={n: float(given.get(n, 0.0)) for n in weights}, scope="layer")
    return cfg


def _hidden_weight(model: nn.Module, cfg: PruneConfig) -> float:
    """The hidden-state term's weight: the user's, else ``TEXT_HIDDEN_WEIGHT`` on repeated blocks."""
    if cfg.hidden_weight is not None:
        if not cfg.hidden_weight >= 0:
            raise ConfigError(f"hidden_weight must be >= 0, got {cfg.hidden_weight}")
        return float(cfg.hidden_weight)
    return TEXT_HIDDEN_WEIGHT if repeated_blocks(model) else 0.0


def _plots(model: nn.Module, plots) -> Path | None:
    folder = Path(plots) if plots else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        plot_weight_histograms(model, folder / PLOT_FILES[0])
        plot_weight_histograms(model, folder / PLOT_FILES[1], nonzero_only=True)
    return folder


def _prune_unlabelled(model: nn.Module, info: ModelInfo, ds: Dataset, cfg: PruneConfig, out, plots) -> PruneRun:
    """Prune and fine-tune against the unpruned model; fidelity to it on the test split, no accuracy."""
    hidden = _hidden_weight(model, cfg)
    if cfg.verbose:
        print(f"the unpruned model's outputs on {len(ds.train)} training samples are the fine-tuning's target "
              "(no labels)" + (f", with its hidden states at {len(repeated_blocks(model))} blocks "
                               f"(weight {hidden:g}; the original runs beside every batch)" if hidden else
                               "; caching them") + " ...", flush=True)
    loss_fn = cached_fidelity_loss(model, ds.train, cfg.augment, hidden_weight=hidden,
                                   student=model if hidden else None)   # a frozen copy, unpruned
    cfg = replace(cfg, hidden_weight=hidden)
    reference = loss_fn.targets.teacher
    seen: dict[str, Fidelity] = {}
    if cfg.schedule == "agp":
        seen["pruned"] = _pruned_only(model, reference, ds, cfg)
    if cfg.verbose:
        print(_plan_line(cfg, None)
              + (f" (the reconstruct rule measures {min(cfg.calibration, len(ds.train))} training samples)"
                 if cfg.rule == RECONSTRUCT else ""), flush=True)
    try:
        with dropout_off(model):     # the target is deterministic (distill/fidelity_loss.py)
            result = prune_and_finetune(model, ds, cfg, loss_fn=loss_fn, score=scorer_for(ds, reference),
                                        on_pruned=lambda m: seen.setdefault("pruned", fidelity(m, reference, ds.test.x)))
    finally:
        loss_fn.close()              # the hidden-state hooks, if any
    pruned = seen["pruned"]
    after = fidelity(model, reference, ds.test.x)
    result = replace(result, accuracy_before=None, accuracy_pruned=None, accuracy_after=None)
    info.record("prune", cfg, sparsity=result.sparsity, layers=result.layers, dead_removed=result.dead_removed,
                dropout=result.dropout, fidelity_pruned=pruned.to_dict(), fidelity=after.to_dict(),
                fidelity_to="the unpruned model", fidelity_on="test", finetune_loss=f"fidelity ({loss_fn.kind})")
    save_model(model, out, info)
    return PruneRun(model, info, result, layer_sparsities(model), None, _plots(model, plots),
                    {"pruned": pruned, "after": after})
