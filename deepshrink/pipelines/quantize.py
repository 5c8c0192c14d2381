"""``deepshrink quantize`` as one call: a model file quantized and written.

* ``linear``: affine int2-8 weights and activations (Jacob et al. 2018) calibrated on the first
  ``calib`` training images, optionally quantization-aware training (with learnt step sizes,
  LSQ: Esser et al. 2020); written with its grids (``save_quantized``).
* ``kmeans``: weight sharing (Han, Mao & Dally 2016): each layer's weights clustered into
  2^bits shared values, optionally with centroid fine-tuning.

The linear method measures the PTQ model before any QAT (``accuracy_ptq``), so a run reports
original -> PTQ -> QAT; k-means reports original -> shared -> centroid-fine-tuned. With ``verbose``
each phase that takes time says what it is about to do first, then shows a bar (``progress``).

Fractional ``qat_epochs`` train one epoch on that first fraction of the training split. The
fine-tuning LR, weight decay and augmentation follow :func:`.defaults.finetune_settings`
(methods ``qat`` and ``kmeans``) unless :class:`.defaults.Finetune` overrides them.

Unlabelled data (``text:FILE``): the run reports fidelity to the original on the test split
(:func:`deepshrink.fidelity.fidelity`) instead of accuracy. ``linear`` there is post-training only
(a transformer does not trace, so module swap: int8 weights per channel, dynamic activations with a
zero point per token, smoothed from the first ``calib`` training rows); ``kmeans``' centroid
fine-tuning distils from the original model
(:func:`deepshrink.distill.fidelity_loss.cached_fidelity_loss`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import Dataset, Split
from ..distill.fidelity_loss import cached_fidelity_loss
from ..distill.run import freeze_teacher
from ..errors import ConfigError, DataError
from ..exit_heads import HEADS_ATTR
from ..fidelity import Fidelity, fidelity
from ..io import ModelInfo, save_model
from ..quant import (KMeansConfig, QuantConfig, centroid_finetune, kmeans_quantize_, qat_finetune, quantize_ptq,
                     save_quantized)
from ..train import TrainConfig, evaluate
from .defaults import Finetune, finetune_settings
from .inputs import open_model_and_data

__all__ = ["QuantizeConfig", "QuantizeRun", "quantize_file", "METHODS", "calibration_images", "first_fraction"]

METHODS = ("linear", "kmeans")


@dataclass
class QuantizeConfig:
    """Every default of ``deepshrink quantize``. ``bits`` are the weight bits (k-means: of the
    conv layers); ``fc_bits`` those of the linear layers (None: ``bits``; k-means: the paper's 5 of
    :class:`~deepshrink.quant.KMeansConfig`, or ``bits`` when lower). Weights are quantized per
    output channel by default, as :class:`~deepshrink.quant.QuantConfig` and ``export --int8`` do."""

    method: str = "linear"
    bits: int = QuantConfig.weight_bits
    fc_bits: int | None = None
    act_bits: int = QuantConfig.act_bits             # linear only
    per_channel: bool = QuantConfig.per_channel      # one weight scale per output channel (linear)
    act_observer: str = QuantConfig.act_observer     # activation range observer (linear)
    smooth_alpha: float | None = QuantConfig.smooth_alpha   # module swap: SmoothQuant strength (None: off)
    weight_observer: str = QuantConfig.weight_observer
    calib: int = 512                                 # calibration images, the first of the training split
    qat_epochs: float = 0.0                          # linear: QAT; k-means: centroid fine-tuning
    lsq: bool = False                                # QAT with learnt step sizes
    seed: int = 0
    progress: bool = True
    verbose: bool = True                             # one line before each phase that takes time

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 <= self.qat_epochs < math.inf:
            raise ConfigError(f"qat_epochs must be finite and >= 0, got {self.qat_epochs}")
        if self.calib < 1:
            raise ConfigError(f"calib must be >= 1, got {self.calib}")

    @property
    def linear_bits(self) -> int:
        if self.fc_bits is not None:
            return self.fc_bits
        if self.method == "kmeans":  # KMeansConfig's (and compress's) fc default, never above ``bits``
            return min(self.bits, KMeansConfig.fc_bits)
        return self.bits

    def quant_config(self, model: nn.Module) -> QuantConfig:
        """The linear method's config for ``model``: its linear layers at ``fc_bits``."""
        layer_bits = {n: self.linear_bits for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        # an early-exit model's heads run from hooks, outside the forward pass a traced graph keeps:
        # module swap quantizes them in place with the rest
        method = "swap" if isinstance(getattr(model, HEADS_ATTR, None), nn.Module) else QuantConfig.method
        return QuantConfig(weight_bits=self.bits, act_bits=self.act_bits, per_channel=self.per_channel,
                           weight_observer=self.weight_observer, act_observer=self.act_observer,
                           layer_bits={k: v for k, v in layer_bits.items() if v != self.bits}, method=method,
                           smooth_alpha=self.smooth_alpha)

    def kmeans_config(self) -> KMeansConfig:
        return KMeansConfig(conv_bits=self.bits, fc_bits=self.linear_bits)


@dataclass
class QuantizeRun:
    model: nn.Module                    # the fake-quantized graph (linear) or the shared-weight model
    info: ModelInfo                     # what was written
    accuracy_before: float | None       # None on unlabelled data (text)
    accuracy_after: float | None
    accuracy_kmeans: float | None = None  # k-means: right after sharing, before fine-tuning
    calib: int = 0                      # linear: calibration images used (0: module swap, dynamic activations)
    accuracy_ptq: float | None = None   # linear: right after PTQ (before QAT, when there is QAT)
    fidelity: dict[str, Fidelity] | None = None  # unlabelled data: {"kmeans", "after"} against the original


def calibration_images(ds: Dataset, n: int) -> torch.Tensor:
    """The first ``n`` training images (all when fewer)."""
    if n < 1:
        raise ConfigError(f"calib must be >= 1, got {n}")
    return ds.train.x[:min(n, len(ds.train))]


def first_fraction(ds: Dataset, epochs: float) -> tuple[Dataset, int]:
    """Fractional epochs train one epoch on the first fraction of the training split."""
    if epochs <= 0:
        raise ConfigError(f"qat_epochs must be > 0, got {epochs}")
    if epochs >= 1:
        return ds, int(round(epochs))
    n = max(1, int(len(ds.train) * epochs))
    return Dataset(ds.name, Split(ds.train.x[:n], ds.train.y[:n]), ds.test, ds.mean, ds.std, ds.num_classes,
                   labelled=ds.labelled), 1


def _say(cfg: QuantizeConfig, line: str) -> None:
    if cfg.verbose:
        print(line, flush=True)


def _tuning(what: str, data: Dataset, epochs: int, tcfg: TrainConfig) -> str:
    """The line announcing a fine-tuning phase: its length, data and optimizer."""
    return (f"{what}: {epochs} epoch{'s' if epochs != 1 else ''} on {len(data.train):,} training images "
            f"({'SGD' if tcfg.optimizer == 'sgd' else 'AdamW'}, lr {tcfg.lr:g}, "
            f"augment {'on' if tcfg.augment else 'off'}) ...")


def _linear(model, info: ModelInfo, ds: Dataset, cfg: QuantizeConfig, before: float, out,
            finetune: Finetune | None) -> QuantizeRun:
    qcfg = cfg.quant_config(model)
    calib = calibration_images(ds, cfg.calib)
    fields: dict = {"method": "linear", "calib": len(calib)}
    if qcfg.method == "swap":
        _say(cfg, f"PTQ by module swap (the model has exit heads, which a traced graph would drop): {cfg.bits}-bit "
                  f"weights, {cfg.act_bits}-bit dynamic activations for linear layers ...")
    else:
        _say(cfg, f"PTQ: {cfg.bits}-bit weights, {cfg.act_bits}-bit activations calibrated on {len(calib):,} "
                  "training images ...")
    gm = quantize_ptq(model, calib, qcfg)
    ptq = evaluate(gm, ds.test, progress=cfg.progress, desc="test accuracy, PTQ")
    _say(cfg, f"PTQ test accuracy {ptq * 100:.2f}% (original {before * 100:.2f}%)")
    after = ptq
    if cfg.qat_epochs:
        data, epochs = first_fraction(ds, cfg.qat_epochs)
        tune = finetune_settings("qat", info, finetune)
        tcfg = TrainConfig(epochs=epochs, lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment,
                           label_smoothing=tune.label_smoothing, warmup_epochs=0.0, eval_every=0, seed=cfg.seed,
                           progress=cfg.progress, verbose=cfg.verbose)
        _say(cfg, _tuning("quantization-aware training" + (" with learnt step sizes (LSQ)" if cfg.lsq else ""),
                          data, epochs, tcfg))
        gm, _ = qat_finetune(model, data, calib, qcfg, tcfg, lsq=cfg.lsq, ptq=gm)   # from this PTQ: calibrated once
        fields["qat"] = {"epochs": cfg.qat_epochs, "lsq": cfg.lsq, "train": asdict(tcfg)}
        after = evaluate(gm, ds.test, progress=cfg.progress, desc="test accuracy, after QAT")
    info.record("quantize", qcfg, accuracy=after, **fields, accuracy_before=before, accuracy_ptq=ptq,
                accuracy_after=after)
    save_quantized(gm, out, info, qcfg, accuracy=after)
    return QuantizeRun(gm, info, before, after, calib=0 if qcfg.method == "swap" else len(calib), accuracy_ptq=ptq)


def _kmeans(model, info: ModelInfo, ds: Dataset, cfg: QuantizeConfig, before: float, out,
            finetune: Finetune | None) -> QuantizeRun:
    kcfg = cfg.kmeans_config()
    kinds = [f"each {kind} layer's weights clustered into {2 ** b} shared values" for kind, b, t in
             (("conv", kcfg.conv_bits, nn.Conv2d), ("linear", kcfg.fc_bits, nn.Linear))
             if any(isinstance(m, t) for m in model.modules())]
    _say(cfg, f"k-means sharing: {', '.join(kinds) or 'the weights clustered'} ...")
    bits = kmeans_quantize_(model, kcfg)
    mid = evaluate(model, ds.test, progress=cfg.progress, desc="test accuracy, k-means shared")
    _say(cfg, f"test accuracy after k-means sharing {mid * 100:.2f}% (original {before * 100:.2f}%)")
    fields: dict = {"method": "kmeans", "bits": bits}
    after = mid
    if cfg.qat_epochs:
        data, epochs = first_fraction(ds, cfg.qat_epochs)
        tune = finetune_settings("kmeans", info, finetune)
        tcfg = TrainConfig(epochs=epochs, lr=tune.lr, optimizer="adam", weight_decay=tune.weight_decay,
                           augment=tune.augment, label_smoothing=tune.label_smoothing, warmup_epochs=0.0,
                           eval_every=0, seed=cfg.seed, progress=cfg.progress, verbose=cfg.verbose)
        _say(cfg, _tuning("centroid fine-tuning (the shared values trained, each weight keeping its cluster)",
                          data, epochs, tcfg))
        after = centroid_finetune(model, data, tcfg).accuracy
        fields["finetune"] = asdict(tcfg)
    info.record("quantize", kcfg, accuracy=after, **fields, accuracy_before=before, accuracy_kmeans=mid,
                accuracy_after=after)
    save_model(model, out, info)
    return QuantizeRun(model, info, before, after, accuracy_kmeans=mid)


def _kmeans_unlabelled(model, info: ModelInfo, ds: Dataset, cfg: QuantizeConfig, out,
                       finetune: Finetune | None) -> QuantizeRun:
    """k-means on text: centroids fine-tuned against the original; fidelity to it, no accuracy."""
    kcfg = cfg.kmeans_config()
    reference = freeze_teacher(model)
    bits = kmeans_quantize_(model, kcfg)
    mid = fidelity(model, reference, ds.test.x)
    after, fields = mid, {"method": "kmeans", "bits": bits}
    if cfg.qat_epochs:
        data, epochs = first_fraction(ds, cfg.qat_epochs)
        tune = finetune_settings("kmeans", info, finetune)
        tcfg = TrainConfig(epochs=epochs, lr=tune.lr, optimizer="adam", weight_decay=tune.weight_decay,
                           augment=tune.augment, warmup_epochs=0.0, eval_every=0, seed=cfg.seed,
                           progress=cfg.progress)
        loss_fn = cached_fidelity_loss(reference, data.train, tcfg.augment)
        centroid_finetune(model, data, tcfg, loss_fn=loss_fn)
        after = fidelity(model, reference, ds.test.x)
        fields["finetune"] = asdict(tcfg)
        fields["finetune_loss"] = f"fidelity ({loss_fn.kind})"
    info.record("quantize", kcfg, **fields, fidelity_kmeans=mid.to_dict(), fidelity=after.to_dict(),
                fidelity_to="the original model", fidelity_on="test")
    save_model(model, out, info)
    return QuantizeRun(model, info, None, None, fidelity={"kmeans": mid, "after": after})


def _linear_unlabelled(model, info: ModelInfo, ds: Dataset, cfg: QuantizeConfig, out) -> QuantizeRun:
    """Linear PTQ on text: calibrated on the first ``calib`` training rows, fidelity on test."""
    if cfg.qat_epochs:
        raise DataError(f"{ds.name}: text has no labels for quantization-aware training; quantize without "
                        "--finetune-epochs (post-training), or use --method kmeans, whose fine-tuning distils "
                        "from the original")
    qcfg = cfg.quant_config(model)
    qcfg.check()
    calib = calibration_images(ds, cfg.calib)
    _say(cfg, f"PTQ: {cfg.bits}-bit weights, {cfg.act_bits}-bit activations, calibrated on {len(calib):,} "
              "training rows ...")
    gm = quantize_ptq(model, calib, qcfg)
    after = fidelity(gm, model, ds.test.x)
    info.record("quantize", qcfg, method="linear", calib=len(calib), fidelity=after.to_dict(),
                fidelity_to="the original model", fidelity_on="test")
    save_quantized(gm, out, info, qcfg)
    return QuantizeRun(gm, info, None, None, calib=len(calib), fidelity={"after": after})


def quantize_file(src: str | os.PathLike, out: str | os.PathLike, cfg: QuantizeConfig | None = None, *,
                  finetune: Finetune | None = None, data: str | None = None, arch: str | None = None,
                  trust_code: bool = False, seq_len: int | None = None, tokenizer: str | None = None, model_kwargs: dict | None = None) -> QuantizeRun:
    """Quantize the model in ``src`` (``cfg.method``) and write it to ``out``; the accuracies are on
    the test split of ``data`` (default: the data set the file records)."""
    cfg = cfg or QuantizeConfig()
    cfg.check()
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer,
                                          model_kwargs=model_kwargs, need_labels=False)
    if not ds.labelled:
        if cfg.method == "linear":
            return _linear_unlabelled(model, info, ds, cfg, out)
        return _kmeans_unlabelled(model, info, ds, cfg, out, finetune)
    (cfg.kmeans_config() if cfg.method == "kmeans" else cfg.quant_config(model)).check()  # before any evaluation
    before = evaluate(model, ds.test, progress=cfg.progress, desc="test accuracy, original")
    run = _kmeans if cfg.method == "kmeans" else _linear
    return run(model, info, ds, cfg, before, out, finetune)
