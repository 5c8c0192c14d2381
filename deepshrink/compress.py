"""The Deep Compression pipeline (Han, Mao & Dally, ICLR 2016): prune, share, encode.

1. sensitivity scan: each layer pruned alone over a sparsity grid, evaluated on a validation
   split carved from the training split (:func:`deepshrink.data.with_validation`: 10%, at most
   5,000 images) and held out of both fine-tunings below;
2. per-layer sparsities chosen from the scan for a total target (the least sensitive layers,
   weighted by their parameter count, go furthest), or one global threshold;
3. AGP pruning with fine-tuning (masks held);
4. k-means weight sharing (8-bit conv, 5-bit fc by default) and centroid fine-tuning;
5. encoding (sparse relative indices + entropy coding) into a ``.dsz`` file by
   :mod:`deepshrink.codec`, read back and checked bit for bit.

On unlabelled data (text) "accuracy" reads as fidelity to the dense model
(:func:`deepshrink.scoring.scorer_for`: the mean cosine of the embeddings, or the top-1 agreement
of the logits) and both fine-tunings distil from the dense model
(:func:`deepshrink.distill.fidelity_loss.cached_fidelity_loss`).

If the validation accuracy after step 4 has dropped by more than ``max_drop`` percentage points,
the pipeline starts again from the dense model at a lower target (``backoff``), up to
``attempts`` times, and reports every attempt. Every choice (the scan, the budget, the retries)
is made on the validation split; the test split gives the reported accuracy before and after,
and nothing else. :func:`compress` does the work in memory; :func:`compress_file` adds loading,
the .dsz file and its report.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .codec import compression_report, load_compressed, save_compressed
from .data import Dataset, check_val_size, for_selection, val_label, with_validation
from .distill import cached_teacher_loss
from .distill.fidelity_loss import cached_fidelity_loss, dropout_off
from .distill.losses import check_settings
from .errors import ConfigError, FormatError
from .holdout import warn_if_trained_on
from .io import load_teacher
from .masks import layer_sparsities, sparsity
from .names import MASK_SUFFIX
from .pipelines.compress_report import write_report
from .pipelines.defaults import Finetune, finetune_settings
from .pipelines.inputs import open_model_and_data
from .prune import PruneConfig, choose_sparsities, prune_and_finetune, sensitivity_scan
from .prune.finetune import PRUNE_RULES, RECONSTRUCT, resolve_rule
from .prune.variational import VDConfig, sparse_vd_prune_
from .prune.threshold import check_sparsity_map, resolve_layer_names, std_threshold_sparsities
from .targets import prunable_weights
from .pipelines.compress_stages import remove_dead_units, share_weights
from .quant.kmeans import KMeansConfig
from .scoring import Scorer, scorer_for

__all__ = ["CompressConfig", "CompressResult", "Attempt", "compress", "compress_file", "SCAN_GRID", "METHODS", "LABELLED_DEFAULTS",
           "TEXT_DEFAULTS"]

SCAN_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


# What None means for the settings whose default depends on the data (CompressConfig.resolved).
# Labelled images: the Deep Compression recipe as chosen on both LeNets (exploratory runs on the validation
# split, seed 0; the 3-seed test figures are benchmarks/compression_frontier.py's): one global magnitude threshold beat the scan's per-layer allocation at 95% (LeNet-300
# -0.70 vs -0.74 pp, LeNet-5 -0.46 vs -0.54 pp, and no scan to pay for); 20 AGP epochs instead of 10 took
# LeNet-300 from -0.70 to -0.12 pp; widths measured per layer, biases shared and dead units removed took one
# pruned model from 58x / 55x (8/5 bits) to 83x / 83x with the first width rule (drop within 0.1 pp), whose
# widths cost LeNet-300 0.35 pp on the test split that its validation split did not see (+0.14): the fewest
# bits that pass a noisy check flatter the check. With one standard error added (bit_se, within 0.15 pp) the
# same model ends at 74x / 74x, and LeNet-300's widths cost 0.05 pp on test (BENCHMARKS.md, the frontier tables). Unlabelled text (a pretrained transformer scored by
# the mean cosine of its embeddings to the original's): no pruning, 7-bit Linear and 4-bit embedding
# codebooks, a budget of 3 points of cosine. Measured on all-MiniLM-L6-v2 (benchmarks/byom.py, before
# centroid fine-tuning): fc/embedding bits 4/4 10.6x at cosine 0.884, 6/4 9.1x at 0.963, 7/4 8.4x at
# 0.978; 50% of the Linear weights pruned (reconstruct + distillation) 0.955 after 3 epochs on 2.3k sentences,
# 0.967 after 2 epochs on 11.8k, 0.971 after 3 with hidden-state distillation (0.968 int8), before any weight sharing.
LABELLED_DEFAULTS = {"max_drop": 0.5, "sparsity": 0.95, "allocation": "global", "prune_epochs": 20, "fc_bits": 5,
                     "embedding_bits": 0, "bit_widths": "auto", "remove_dead": True, "share_biases": True}
TEXT_DEFAULTS = {"max_drop": 3.0, "sparsity": 0.0, "allocation": "sensitivity", "prune_epochs": 10, "fc_bits": 7,
                 "embedding_bits": 4, "bit_widths": "fixed", "remove_dead": False, "share_biases": False}
METHODS = ("agp", "variational")


@dataclass
class CompressConfig:
    """Every default of the pipeline. ``max_drop`` is in percentage points of the validation score
    (accuracy; on unlabelled data the mean cosine or top-1 agreement to the original). ``None`` in
    ``max_drop``, ``sparsity``, ``fc_bits`` and ``embedding_bits``: the default for the data
    (:data:`LABELLED_DEFAULTS` or :data:`TEXT_DEFAULTS`, see :meth:`resolved`)."""

    max_drop: float | None = None
    sparsity: float | None = None       # first target; lowered by ``backoff`` while over budget; 0: no pruning
    allocation: str | None = None       # "sensitivity" (per-layer, from the scan) or "global"
    rule: str | None = None             # None: magnitude with AGP; reconstruct (one-shot) on unlabelled data
    include: tuple[str, ...] = ()       # name globs adding / removing pruned weights (deepshrink/targets.py;
    exclude: tuple[str, ...] = ()       # default: the Linear/Conv weights but the output layer's)
    val_size: int | None = None         # validation images carved from the training split and held out
                                        # of the fine-tuning (None: 10% of it, at most 5,000)
    prune_epochs: int | None = None     # AGP fine-tuning budget
    prune_lr: float | None = None       # None: the model's recorded training LR (finetune_settings "prune")
    weight_decay: float | None = None   # None: the model's
    conv_bits: int = 8
    fc_bits: int | None = None
    embedding_bits: int | None = None   # nn.Embedding tables (0: left in fp32, the paper's setting)
    bits: dict[str, int] = field(default_factory=dict)   # {layer: bits} by hand, kept under "auto" too
    bit_widths: str | None = None       # "auto": each layer's fewest bits within bit_tolerance on the validation
                                        # split (quant/bit_allocation.py); "fixed": conv_bits / fc_bits
    bit_tolerance: float = 0.15         # pp of validation score one layer's sharing may cost under "auto"
    bit_se: float = 1.0                 # "auto" on labelled data: paired standard errors added to each drop
                                        # (a gain counts as 0) before it is held to bit_tolerance
    method: str = "agp"                 # "agp": magnitude pruning under AGP (or ``rule``); "variational":
                                        # sparse variational dropout (prune/variational.py), then fine-tuning
    remove_dead: bool | None = None     # drop hidden units left with no input or no output (prune/regularize.py)
    share_biases: bool | None = None    # the biases of the shared Conv/Linear layers shared too (8 bits, or
                                        # measured with bit_widths "auto"); BatchNorm and the rest stay fp32
    linear_codebooks: tuple[str, ...] = ()   # layers whose codebook stays linear (evenly spaced, no Lloyd steps)
    # per-layer targets given by hand (prune/threshold.py), each instead of the scan's allocation:
    layer_sparsity: dict[str, float] = field(default_factory=dict)   # {layer or weight name: sparsity}
    threshold_std: float | None = None       # every weight with |w| < s x scale x std(layer) goes
    threshold_scale: dict[str, float] = field(default_factory=dict)  # {layer: multiplier}, 1 where absent
    centroid_epochs: int = 1
    centroid_lr: float = 1e-4           # AdamW; a centroid's gradient sums over its members
    distill: bool = False               # the dense model as teacher in both fine-tunings
    kd_temperature: float = 2.0         # as prune's (PruneConfig): measured on the LeNets
    kd_alpha: float = 0.5
    attempts: int = 2
    backoff: float = 0.02
    augment: bool | None = None         # None: as the model was trained
    seed: int = 0
    progress: bool = True
    verbose: bool = True

    def resolved(self, labelled: bool) -> "CompressConfig":
        """A copy with every ``None`` replaced by the default for labelled or unlabelled data."""
        defaults = LABELLED_DEFAULTS if labelled else TEXT_DEFAULTS
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def check(self) -> None:
        if any(getattr(self, k) is None for k in LABELLED_DEFAULTS):   # checked as the labelled defaults fill in
            self.resolved(True).check()
            return
        if self.bit_widths not in ("auto", "fixed"):
            raise ConfigError(f"bit_widths must be 'auto' or 'fixed', got {self.bit_widths!r}")
        if not 0 <= self.bit_tolerance < math.inf:
            raise ConfigError(f"bit_tolerance must be finite and >= 0, got {self.bit_tolerance}")
        if not 0 <= self.bit_se < math.inf:
            raise ConfigError(f"bit_se must be finite and >= 0, got {self.bit_se}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.allocation not in ("sensitivity", "global"):
            raise ConfigError(f"allocation must be 'sensitivity' or 'global', got {self.allocation!r}")
        if not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not (0 <= self.max_drop < math.inf and 0 <= self.backoff < math.inf) or self.attempts < 1:
            raise ConfigError(f"max_drop and backoff must be finite and >= 0 and attempts >= 1 "
                              f"(got {self.max_drop}, {self.backoff}, {self.attempts})")
        if self.prune_epochs < 0 or self.centroid_epochs < 0:
            raise ConfigError("epochs must be >= 0")
        check_val_size(self.val_size, "val_size")
        if self.prune_lr is not None and not self.prune_lr > 0:
            raise ConfigError(f"prune_lr must be > 0, got {self.prune_lr}")
        check_settings(self.kd_temperature, self.kd_alpha, "kl")
        KMeansConfig(self.conv_bits, self.fc_bits, dict(self.bits), embedding_bits=self.embedding_bits,
                     linear=list(self.linear_codebooks)).check()
        if self.layer_sparsity and self.threshold_std is not None:
            raise ConfigError("give a per-layer sparsity map or a threshold of s standard deviations, not both")
        if self.threshold_scale and self.threshold_std is None:
            raise ConfigError("threshold scales multiply threshold_std: give it too")
        check_sparsity_map(self.layer_sparsity)
        if self.rule is not None and self.rule not in PRUNE_RULES:
            raise ConfigError(f"unknown rule {self.rule!r}; choose one of {', '.join(PRUNE_RULES)}")


@dataclass
class Attempt:
    """One try at a target; its accuracies are on the validation split (they decide the retries)."""

    target: float
    layer_targets: dict[str, float]
    val_accuracy_pruned: float
    val_accuracy_quantized: float
    sparsity: float                     # what pruning reached, before dead units were removed
    seconds: float
    dead_removed: dict[str, int] = field(default_factory=dict)   # {first layer: hidden units removed}
    bits: dict[str, int] = field(default_factory=dict)           # the widths it shared the weights at
    bit_tolerance: float | None = None                           # pp per layer the widths were chosen at

    def drop_pp(self, val_before: float) -> float:
        """The validation-accuracy drop from ``val_before`` (the dense model's), in percentage points."""
        return (val_before - self.val_accuracy_quantized) * 100


@dataclass
class CompressResult:
    model: nn.Module
    accuracy_before: float              # test split, dense: reported, never used for a choice
    accuracy_after: float               # test split, the compressed model
    val_accuracy_before: float          # validation split, dense: the budget's reference
    attempts: list[Attempt]
    scan: dict | None
    bits: dict[str, int]
    layers: dict[str, float]            # final sparsity per layer
    scan_on: str                        # which images the scan evaluated ("-": no scan)
    val_on: str                         # which images the validation accuracies come from
    test_on: str                        # which images the test accuracies come from
    seconds: float
    max_drop: float = 0.5
    metric: str = "accuracy"            # what the "accuracies" are: accuracy, or fidelity to the dense model

    @property
    def val_accuracy_after(self) -> float:
        return self.attempts[-1].val_accuracy_quantized

    @property
    def within_budget(self) -> bool:
        """The budget as the pipeline judged it: the drop on the validation split."""
        return self.attempts[-1].drop_pp(self.val_accuracy_before) <= self.max_drop

    def to_dict(self) -> dict:
        return {"accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
                "accuracy_on": self.test_on, "val_accuracy_before": self.val_accuracy_before,
                "val_accuracy_after": self.val_accuracy_after, "val_on": self.val_on, "budget_on": "validation",
                "attempts": [asdict(a) for a in self.attempts], "bits": self.bits, "layers": self.layers,
                "scan_on": self.scan_on, "seconds": self.seconds, "within_budget": self.within_budget,
                "metric": self.metric, "max_drop": self.max_drop}


def _say(cfg: CompressConfig, text: str) -> None:
    if cfg.verbose:
        print(text, flush=True)


def compress(model: nn.Module, data: Dataset, cfg: CompressConfig | None = None,
             trained: dict | None = None, teacher: nn.Module | None = None, *,
             report_test: bool = True) -> CompressResult:
    """Prune and k-means-quantize ``model`` (not modified; the result holds a new one).

    ``data`` gets a validation split (:func:`~deepshrink.data.with_validation` with ``cfg.val_size``,
    unless it has one): the scan, the budget and the retries are judged on it, both fine-tunings
    train on the other training images, and the test split is evaluated only for the reported
    accuracies before and after.

    ``trained``: the model's recorded training settings (``ModelInfo.train_config()``), from which
    :func:`~deepshrink.pipelines.defaults.finetune_settings` (method ``prune``) takes the pruning
    fine-tuning's LR, weight decay and augmentation unless ``cfg`` sets them. ``teacher``: a model
    to distil from during both fine-tunings (``cfg.distill`` uses the dense model itself).
    Each attempt lowers the sparsity target by ``cfg.backoff`` until the drop fits ``cfg.max_drop``
    (a hand-given per-layer map: every layer's sparsity by ``backoff``).
    ``report_test=False`` leaves the test split untouched (``accuracy_before``/``after`` are NaN):
    for a caller that compares several runs on the validation split and tests only its choice.
    """
    cfg = (cfg or CompressConfig()).resolved(data.labelled)
    cfg.check()
    targets = prunable_weights(model, cfg.include, cfg.exclude)  # a glob matching no weight fails before any work
    hand = _hand_map(cfg, targets)
    t0 = time.perf_counter()
    data = with_validation(data, cfg.val_size)
    select = for_selection(data)        # train: the images left; "test": the validation split
    dense = copy.deepcopy(model).eval()
    score = scorer_for(data, None if data.labelled else dense)
    before = score(dense, data.test) if report_test else math.nan    # reported only
    val_before = score(dense, data.val)  # the budget's reference
    scan, scan_on = _scan(dense, data, cfg, score) if hand is None else (None, "-")
    tune = finetune_settings("prune", trained, Finetune(lr=cfg.prune_lr, weight_decay=cfg.weight_decay,
                                                        augment=cfg.augment), unlabelled=not data.labelled)
    loss_fn = _finetune_loss(dense, data, cfg, tune, teacher)
    attempts: list[Attempt] = []
    target = cfg.sparsity if hand is None else _map_sparsity(hand, targets)
    for i in range(cfg.attempts):
        layer_map = None if hand is None else {k: max(0.0, round(v - i * cfg.backoff, 6)) for k, v in hand.items()}
        work, bits, att = _attempt(dense, select, cfg, tune, scan, target, loss_fn, i, score,
                                   (val_before, cfg.max_drop), layer_map)
        attempts.append(att)
        _say(cfg, f"  validation {score.name} {val_before * 100:.2f}% -> pruned {att.val_accuracy_pruned * 100:.2f}% "
             f"-> quantized {att.val_accuracy_quantized * 100:.2f}% ({-att.drop_pp(val_before):+.2f} pp; "
             f"budget -{cfg.max_drop} pp)")
        target = round(target - cfg.backoff, 6)
        if att.drop_pp(val_before) <= cfg.max_drop or target <= 0:
            break
    test_on = f"the test split ({len(data.test)} {'images' if data.labelled else 'samples'})"
    after = score(work, data.test) if report_test else math.nan   # the test split, once, for the reported figure
    if report_test:
        _say(cfg, f"  test {score.name} {before * 100:.2f}% -> {after * 100:.2f}% ({(after - before) * 100:+.2f} pp; "
             f"reported only: every choice was made on {val_label(data)})")
    return CompressResult(work, before, after, val_before, attempts, scan, bits, layer_sparsities(work), scan_on,
                          val_label(data), test_on, time.perf_counter() - t0, cfg.max_drop, score.name)


def _hand_map(cfg: CompressConfig, targets: dict[str, torch.Tensor]) -> dict[str, float] | None:
    """The hand-given per-layer sparsities ({weight name: sparsity}, every target weight present),
    from ``layer_sparsity`` (absent layers: 0) or ``threshold_std``; None: the scan decides."""
    if cfg.threshold_std is not None:
        return std_threshold_sparsities(targets, cfg.threshold_std, cfg.threshold_scale)
    if cfg.layer_sparsity:
        given = resolve_layer_names(cfg.layer_sparsity, targets, "layer sparsity")
        return {name: float(given.get(name, 0.0)) for name in targets}
    return None


def _map_sparsity(layer_map: dict[str, float], targets: dict[str, torch.Tensor]) -> float:
    """The overall sparsity a per-layer map asks for, over the target weights."""
    total = sum(targets[n].numel() for n in layer_map)
    return sum(layer_map[n] * targets[n].numel() for n in layer_map) / max(total, 1)


def _finetune_loss(dense: nn.Module, data: Dataset, cfg: CompressConfig, tune, teacher: nn.Module | None):
    """KD from ``teacher`` (or the dense model with ``cfg.distill``); on unlabelled data, distillation
    from the dense model's outputs, the only target there is; else None (cross-entropy)."""
    if teacher is None and cfg.distill:
        teacher = dense
    if teacher is not None:
        return cached_teacher_loss(teacher, data.train, tune.augment, cfg.kd_temperature, cfg.kd_alpha)
    if not data.labelled:
        _say(cfg, f"[distil] caching the dense model's outputs on {len(data.train)} training samples "
             "(no labels: both fine-tunings pull the outputs towards the dense model's)")
        return cached_fidelity_loss(dense, data.train, tune.augment)
    return None


def _scan(dense: nn.Module, data: Dataset, cfg: CompressConfig, score: Scorer) -> tuple[dict | None, str]:
    """The sensitivity scan that allocates sparsity per layer, on the validation split (None with
    ``allocation="global"``)."""
    if cfg.allocation != "sensitivity" or cfg.sparsity == 0 or cfg.method == "variational":
        return None, "-"
    scan_on = val_label(data)
    _say(cfg, f"[scan] sensitivity of each layer on {scan_on}, scored by {score.name}")
    scan = sensitivity_scan(dense, lambda m: score(m, data.val), SCAN_GRID, progress=cfg.progress,
                            include=cfg.include, exclude=cfg.exclude)
    scan["metric"] = score.name
    return scan, scan_on


def _attempt(dense: nn.Module, select: Dataset, cfg: CompressConfig, tune, scan: dict | None, target: float,
             loss_fn, i: int, score: Scorer, budget: tuple[float, float], layer_map: dict[str, float] | None = None
             ) -> tuple[nn.Module, dict, Attempt]:
    """One try at ``target`` sparsity: AGP pruning with fine-tuning, k-means sharing, centroid
    fine-tuning; returns (the compressed copy, its bits per layer, the attempt's record).
    ``select`` is :func:`~deepshrink.data.for_selection`'s view: the fine-tunings train on its
    ``train`` and every accuracy they return is on the validation split (its ``test``)."""
    ta = time.perf_counter()
    work = copy.deepcopy(dense)
    layer_targets: float | dict = (layer_map if layer_map is not None else
                                   target if scan is None else choose_sparsities(scan, target_sparsity=target))
    if layer_map is not None:
        target = _map_sparsity(layer_map, {n: p for n, p in dense.named_parameters() if n in layer_map})
    rule = cfg.rule or (RECONSTRUCT if not select.labelled else "magnitude")
    # global allocation: one magnitude threshold across layers; reconstruct has none, so one sparsity per layer
    scope = "layer" if scan is not None or layer_map is not None or rule == RECONSTRUCT else "global"
    prune_cfg = resolve_rule(PruneConfig(
        sparsity=layer_targets, scope=scope, rule=rule, schedule=None,
        epochs=cfg.prune_epochs, lr=tune.lr, weight_decay=tune.weight_decay, augment=tune.augment, seed=cfg.seed,
        optimizer=tune.optimizer, warmup_epochs=tune.warmup_epochs, batch_size=tune.batch_size or PruneConfig.batch_size,
        include=cfg.include, exclude=cfg.exclude, distill=False,     # distillation: loss_fn, from cfg.distill
        progress=cfg.progress, verbose=cfg.verbose), select)
    how = (f"AGP over {cfg.prune_epochs} epochs" if prune_cfg.schedule == "agp" else
           f"{prune_cfg.rule} at once, then {cfg.prune_epochs} epochs of fine-tuning")
    if cfg.method == "variational":
        _say(cfg, f"[prune] attempt {i + 1}: sparse variational dropout over {cfg.prune_epochs} epochs "
             "(the sparsity is learnt, not set)")
    elif target > 0:
        _say(cfg, f"[prune] attempt {i + 1}: {target:.1%} sparsity, {how}"
             + ("" if not isinstance(layer_targets, dict) else
               " (" + ", ".join(f"{k} {v:.2f}" for k, v in layer_targets.items()) + ")"))
    else:
        _say(cfg, "[prune] sparsity 0: nothing pruned (weight sharing and entropy coding only)")
    # on text both fine-tunings distil a deterministic target: dropout off (distill/fidelity_loss.py)
    quiet = dropout_off(work) if not select.labelled else contextlib.nullcontext()
    with quiet:
        if cfg.method == "variational":
            acc_pruned = sparse_vd_prune_(work, select, VDConfig(
                epochs=cfg.prune_epochs, seed=cfg.seed, augment=tune.augment, progress=cfg.progress,
                verbose=cfg.verbose), loss_fn=loss_fn, score=score, include=cfg.include, exclude=cfg.exclude)
            target = sparsity(work)     # what it learnt
        elif target > 0:
            acc_pruned = prune_and_finetune(work, select, prune_cfg, loss_fn=loss_fn, score=score).accuracy_after
        else:
            acc_pruned = score(work, select.test)
        reached = sparsity(work)       # the pruning's, over the layers as they were (before units go)
        dead = remove_dead_units(work, cfg)
    work, bits, acc_q, tolerance = share_weights(work, select, cfg, tune, loss_fn, score, budget, acc_pruned)
    att = Attempt(target, layer_targets if isinstance(layer_targets, dict) else {},
                  acc_pruned, acc_q, reached, time.perf_counter() - ta, dead, bits, tolerance)
    return work, bits, att


def _check_out_parents(out: str) -> None:
    """Refuse, before anything is read, an output under a regular file (the folder could never be
    created); missing folders are created only once the model and data have loaded, so that a
    failed load leaves no empty folder behind."""
    for parent in Path(out).absolute().parents:
        if parent.is_dir():
            return
        if parent.exists():
            raise ConfigError(f"{out}: {parent} is a file, not a folder")


def compress_file(src: str, out: str, cfg: CompressConfig | None = None, data_spec: str | None = None,
                  arch: str | None = None, trust_code: bool = False, teacher: str | None = None,
                  model_kwargs: dict | None = None, seq_len: int | None = None, tokenizer: str | None = None):
    """Load ``src``, run :func:`compress`, write ``out`` (.dsz) and its report beside it.
    ``teacher``: a model file to distil from during both fine-tunings.

    The file is read back and its weights compared bit for bit with the quantized model before
    anything is reported. Returns ``(CompressResult, CompressionReport, report path)``.
    """
    cfg = cfg or CompressConfig()
    cfg.check()
    _check_out_parents(out)
    model, info, data = open_model_and_data(src, data_spec, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer,
                                            need_labels=False, model_kwargs=model_kwargs)
    spec = info.data if data_spec is None else data_spec
    teacher_model = load_teacher(teacher, data, trust_code=trust_code) if teacher else None
    cfg = cfg.resolved(data.labelled)   # recorded in the file as run
    try:  # a missing output folder is created, as by every command: once the inputs loaded, before the fine-tuning
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the output folder {Path(out).parent} "
                          f"({exc.strerror or exc})") from None
    data = with_validation(data, cfg.val_size)        # the split compress chooses on (it keeps this one)
    warn_if_trained_on(src, info, data)
    result = compress(model, data, cfg, info.train_config(), teacher=teacher_model)
    info.record("compress", cfg, accuracy=result.accuracy_after, **({"teacher": str(teacher)} if teacher else {}),
                **{k: v for k, v in result.to_dict().items() if k != "attempts"}, attempts=len(result.attempts))
    save_compressed(result.model, out, info)
    decoded = load_compressed(out, trust_code=trust_code or arch is not None)  # naming the callable trusts it
    ours = dict(result.model.state_dict())
    for name, t in decoded.state_dict().items():
        if name.endswith(MASK_SUFFIX):
            continue
        ref = ours.get(name)
        if ref is None or ref.shape != t.shape or ref.dtype != t.dtype or not torch.equal(
                ref.contiguous().reshape(-1).view(torch.uint8), t.contiguous().reshape(-1).view(torch.uint8)):
            raise FormatError(f"{out}: tensor {name!r} did not decode bit for bit")
    report = compression_report(out)
    md = write_report(result, report, Path(out), src, spec)
    return result, report, md
