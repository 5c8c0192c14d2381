"""The stages of the Deep Compression pipeline after pruning (:mod:`deepshrink.compress`): dead units
removed, then k-means weight sharing with centroid fine-tuning at fixed or measured widths.

Measured widths (``bit_widths="auto"``, :mod:`deepshrink.quant.bit_allocation`) are chosen on the
validation split; when the shared model ends over the budget while the pruned one was within it,
the widths are chosen again at half the per-layer tolerance (``BIT_RETRIES`` times at most) before
the pipeline gives up any sparsity.

``cfg`` is the pipeline's resolved ``deepshrink.compress.CompressConfig`` (not imported here: that
module imports this one).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

from torch import nn

from ..data import Dataset
from ..distill.fidelity_loss import dropout_off
from ..errors import ModelError
from ..prune.regularize import remove_dead_neurons
from ..quant.bit_allocation import BitChoice, choose_bits, shared_layers
from ..quant.kmeans import KMeansConfig, centroid_finetune, kmeans_quantize_
from ..scoring import Scorer
from ..train import TrainConfig

__all__ = ["BIT_RETRIES", "share_weights", "remove_dead_units"]

BIT_RETRIES = 2     # measured widths: shared again at half the tolerance at most this often per attempt


def _say(cfg, text: str) -> None:
    if cfg.verbose:
        print(text, flush=True)


def share_weights(work: nn.Module, select: Dataset, cfg, tune, loss_fn, score: Scorer,
                   budget: tuple[float, float], acc_pruned: float) -> tuple[nn.Module, dict, float, float | None]:
    """k-means weight sharing and centroid fine-tuning of the pruned ``work``: returns (the shared
    model, its bits, its validation score, the per-layer tolerance in pp its widths were chosen at).

    With measured widths (``bit_widths="auto"``) a result over ``budget`` = (validation score of the
    dense model, max drop in pp) is shared again from the same pruned model at half the per-layer
    tolerance, twice at most, before the caller gives up sparsity: widths cost a centroid epoch to
    retry, pruning a whole fine-tuning. Not when the pruned model (``acc_pruned``) was already over
    the budget, nor when halving the tolerance chose the same widths."""
    kcfg = KMeansConfig(cfg.conv_bits, cfg.fc_bits, dict(cfg.bits), embedding_bits=cfg.embedding_bits,
                        linear=list(cfg.linear_codebooks))
    if cfg.share_biases:
        kcfg = replace(kcfg, include=_shared_biases(work, kcfg))
    tolerances = [cfg.bit_tolerance / 2 ** k for k in range(BIT_RETRIES + 1)] if cfg.bit_widths == "auto" else [None]
    val_before, max_drop = budget
    done = None                                           # (model, bits, score, tolerance) of the last sharing
    choice = None                                         # the last measured widths: their scores are reused
    for tol in tolerances:
        kq, widths, choice = _widths(work, select, cfg, kcfg, score, tol, choice)
        if done is not None:
            if kq.bits == done[1]:
                continue                                  # the same widths again: the same result
            _say(cfg, f"  validation {score.name} after sharing {done[2] * 100:.2f}% ({(done[2] - val_before) * 100:+.2f} "
                 f"pp; budget -{max_drop} pp): widths again at half the tolerance")
        q = copy.deepcopy(work)
        # on text the centroid fine-tuning distils a deterministic target: dropout off (distill/fidelity_loss.py)
        with dropout_off(q) if not select.labelled else contextlib.nullcontext():
            bits = kmeans_quantize_(q, kq)
            _say(cfg, f"[quantize] k-means ({widths}), centroid fine-tuning {cfg.centroid_epochs} epoch(s)")
            if cfg.centroid_epochs > 0:
                centroid_finetune(q, select, TrainConfig(
                    epochs=cfg.centroid_epochs, lr=cfg.centroid_lr, optimizer="adam", weight_decay=0.0,
                    augment=tune.augment, seed=cfg.seed, progress=cfg.progress, verbose=cfg.verbose, eval_every=0),
                    loss_fn=loss_fn)
        done = (q, bits, score(q, select.test), tol)
        if (val_before - done[2]) * 100 <= max_drop or (val_before - acc_pruned) * 100 > max_drop:
            break                      # within budget, or pruning alone was over it: no width can mend that
    return done


def _widths(work: nn.Module, select: Dataset, cfg, kcfg: KMeansConfig, score: Scorer, tol: float | None,
            known: BitChoice | None) -> tuple[KMeansConfig, str, BitChoice | None]:
    """``kcfg`` with the widths to share at (measured within ``tol`` pp per layer on the validation
    split, reusing ``known``'s measurements, or the fixed ones for None), the widths in words, and
    the measured choice."""
    if tol is None:
        return kcfg, f"{cfg.conv_bits}-bit conv, {cfg.fc_bits}-bit fc" + (
            f", {cfg.embedding_bits}-bit embeddings" if cfg.embedding_bits else ""), None
    samples = (lambda m: score.samples(m, select.test)) if score.samples is not None else None
    choice = choose_bits(work, lambda m: score(m, select.test), kcfg, tol / 100, fixed=dict(cfg.bits), known=known,
                         samples=samples, z=cfg.bit_se)
    margin = f" with {cfg.bit_se:g} standard error(s) added" if samples is not None and cfg.bit_se else ""
    return replace(kcfg, bits=choice.bits), f"widths measured within {tol:g} pp per layer{margin}: " + ", ".join(
        f"{k} {v}" for k, v in choice.bits.items()), choice


def _shared_biases(model: nn.Module, kcfg: KMeansConfig) -> list[str]:
    """The bias names of the layers ``kcfg`` shares (their weights'), for KMeansConfig.include."""
    mods = dict(model.named_modules())
    return [f"{n}.bias" for n in shared_layers(model, kcfg)
            if isinstance(getattr(mods.get(n), "bias", None), nn.Parameter)]


def remove_dead_units(work: nn.Module, cfg) -> dict[str, int]:
    """Drop the hidden units pruning left with no input or no output (``cfg.remove_dead``); a model
    torch.fx cannot trace keeps them, with a line saying so."""
    if not cfg.remove_dead:
        return {}
    try:
        dead = remove_dead_neurons(work)
    except ModelError as exc:
        _say(cfg, f"[units] dead units kept: {exc}")
        return {}
    if dead:
        _say(cfg, "[units] removed " + ", ".join(f"{n} units after {k}" for k, n in dead.items())
             + " (no input or no output left; outputs unchanged)")
    return dead
