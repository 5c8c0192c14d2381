"""Teacher to student training on top of :func:`deepshrink.train.fit`.

* :func:`teacher_loss` turns a teacher into a ``fit`` loss ``(model, logits, x, y)``; pruning
  and quantization fine-tuning pass the uncompressed model through it (distillation during
  compression).
* :func:`distill` trains a student against a teacher's logits (KL, L2 or cosine) and
  optionally against its features on named layers, with ``fit``'s progress bars, callbacks,
  checkpoints and DDP. A student carrying pruning masks keeps its zeros (MaskCallback).
* Teacher logits are cached for the whole training split when training does not augment
  (the targets are then a pure function of the image); with augmentation the teacher runs on
  every batch. Feature distillation always runs the teacher live (its features are needed).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..data import Dataset, Split
from ..errors import ConfigError
from ..masks import MaskCallback, get_masks
from ..train import FitResult, TrainConfig, fit
from .cache import LogitCache, TeacherTargets, build_logit_cache
from .features import FeatureCapture, FeatureStudent, match_teacher, parse_pairs
from .losses import FEATURE_LOSSES, check_settings, feature_distance, logit_loss

__all__ = ["DistillConfig", "DistillResult", "teacher_loss", "cached_teacher_loss", "distill", "freeze_teacher",
           "with_input_stats"]


@dataclass
class DistillConfig:
    loss: str = "kl"                  # on logits: "kl" (Hinton), "l2", "cosine"
    temperature: float = 4.0          # only "kl" uses it
    alpha: float = 0.9                # weight of the teacher term; 1 - alpha on cross-entropy
    features: list = field(default_factory=list)  # ["student_layer:teacher_layer", ...]
    feature_loss: str = "l2"          # "l2" or "cosine" on the adapted features
    feature_weight: float = 1.0
    cache: bool = True                # cache the split's teacher logits when training does not augment

    def check(self) -> None:
        check_settings(self.temperature, self.alpha, self.loss)
        if self.feature_loss not in FEATURE_LOSSES:
            raise ConfigError(f"feature loss must be one of {', '.join(FEATURE_LOSSES)}, got {self.feature_loss!r}")
        if not self.feature_weight >= 0:
            raise ConfigError(f"feature weight must be >= 0, got {self.feature_weight}")
        parse_pairs(self.features)


@dataclass
class DistillResult:
    fit: FitResult
    accuracy: float                   # the student's test accuracy, in [0, 1]
    cache_hits: int                   # batch images whose teacher logits came from the cache
    cache_misses: int                 # ... that the teacher computed live
    cache_seconds: float              # building the cache (0 when given or not used)
    adapter_params: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fit"] = {"seconds": self.fit.seconds, "accuracy": self.fit.accuracy, "history": self.fit.history}
        return d


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def freeze_teacher(teacher: nn.Module, copy_teacher: bool = True) -> nn.Module:
    """An eval-mode teacher with no gradients (a copy, in channels-last when it is convolutional)."""
    frozen = copy.deepcopy(teacher) if copy_teacher else teacher
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if copy_teacher and _has_conv(frozen):
        frozen.to(memory_format=torch.channels_last)  # faster CPU convolutions, same values
    return frozen


class _Affine(nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x):
        return x * self.scale + self.shift


def _same_stats(a, b) -> bool:
    """Per-channel statistics equal up to float32 rounding (two runs over the same images may
    record 0.28604060 and 0.28604057)."""
    return len(a) == len(b) and torch.allclose(torch.tensor(a, dtype=torch.float64),
                                               torch.tensor(b, dtype=torch.float64), rtol=1e-6, atol=1e-7)


def with_input_stats(teacher: nn.Module, data_mean, data_std, teacher_mean, teacher_std) -> nn.Module:
    """The teacher behind a renormalisation when it was trained with other input statistics:
    x_t = (x * s_d + m_d - m_t) / s_t, per channel. Statistics equal up to float32 rounding
    leave the teacher as it is, so its layers keep their own names (``--features S:T``)."""
    if teacher_mean is None or teacher_std is None or (
            _same_stats(list(data_mean), list(teacher_mean)) and _same_stats(list(data_std), list(teacher_std))):
        return teacher
    shape = (1, -1, 1, 1)
    md, sd = torch.tensor(data_mean).view(shape), torch.tensor(data_std).view(shape)
    mt, st = torch.tensor(teacher_mean).view(shape), torch.tensor(teacher_std).view(shape)
    return nn.Sequential(_Affine(sd / st, (md - mt) / st), teacher)


def teacher_loss(teacher: nn.Module | None, temperature: float = 4.0, alpha: float = 0.9, loss: str = "kl", *,
                 cache: LogitCache | None = None, copy_teacher: bool = True):
    """A ``fit`` loss ``(model, logits, x, y)`` distilling from a frozen (copied) teacher.

    ``cache`` supplies the teacher's logits for images of a cached split (others go through the
    teacher); ``teacher`` may be None when every image is cached. ``loss_fn.targets`` counts
    cache hits and misses.
    """
    check_settings(temperature, alpha, loss)
    if teacher is None and cache is None:
        raise ConfigError("teacher_loss needs a teacher model or a logit cache")
    frozen = freeze_teacher(teacher, copy_teacher) if teacher is not None else None
    targets = TeacherTargets(frozen, cache)

    def loss_fn(model, logits, x, y):
        return logit_loss(loss, logits, targets(x), y, temperature, alpha)

    loss_fn.targets = targets
    return loss_fn


def cached_teacher_loss(teacher: nn.Module, train: Split, augment: bool, temperature: float = 4.0,
                        alpha: float = 0.9, loss: str = "kl", *, progress: bool = False, verbose: bool = False):
    """:func:`teacher_loss` from a frozen copy of ``teacher``, with its logits for the ``train``
    split computed once when training does not augment (augmented images are never cached;
    ``verbose``: say so first, ``progress``: a bar while they are computed)."""
    frozen = freeze_teacher(teacher)
    if not augment and verbose:
        print(_caching_line(len(train)), flush=True)
    cache = None if augment else build_logit_cache(frozen, train, progress=progress)
    return teacher_loss(frozen, temperature, alpha, loss, cache=cache, copy_teacher=False)


def _caching_line(n: int) -> str:
    """What caching the teacher's logits is about to do, in words."""
    return (f"caching the teacher's logits on {n:,} training images (one pass of the teacher; "
            "without augmentation every epoch reuses them) ...")


def _feature_loss(frozen: nn.Module, wrapper: FeatureStudent, cfg: DistillConfig):
    capture = FeatureCapture(frozen, [t for _, t in wrapper.pairs], "the teacher")

    targets = TeacherTargets(frozen)  # no cache: counts every image as computed live

    def loss_fn(model, logits, x, y):
        capture.outputs.clear()
        z_t = targets(x)  # (N, classes); fills capture.outputs
        t_feats = match_teacher(capture.outputs, wrapper.pairs, wrapper.targets)
        feat = sum(feature_distance(cfg.feature_loss, s, t) for s, t in zip(wrapper.adapted, t_feats))
        return logit_loss(cfg.loss, logits, z_t, y, cfg.temperature, cfg.alpha) + cfg.feature_weight * feat

    loss_fn.capture, loss_fn.targets = capture, targets
    return loss_fn


def distill(teacher: nn.Module, student: nn.Module, data: Dataset, config: DistillConfig | None = None,
            train: TrainConfig | None = None, callbacks=(), cache: LogitCache | None = None) -> DistillResult:
    """Train ``student`` in place against ``teacher`` (left untouched) on ``data.train``.

    ``cache``: teacher logits already computed for ``data.train`` (reused across runs); without
    it one is built when ``config.cache`` is on and ``train.augment`` is off.
    """
    cfg = config or DistillConfig()
    cfg.check()
    tcfg = train or TrainConfig()
    tcfg.check()
    callbacks = ([MaskCallback()] if get_masks(student) else []) + list(callbacks)
    frozen = freeze_teacher(teacher)
    wrapper, targets, cache_seconds = None, None, 0.0
    if cfg.features:
        wrapper = FeatureStudent(student, frozen, cfg.features, data.train.x[:2])
        loss_fn, model = _feature_loss(frozen, wrapper, cfg), wrapper
        targets = loss_fn.targets
    else:
        if tcfg.augment:
            cache = None  # augmented images are never in the cache
        elif cache is None and cfg.cache:
            if tcfg.verbose:
                print(_caching_line(len(data.train)), flush=True)
            t0 = time.perf_counter()
            cache = build_logit_cache(frozen, data.train, progress=tcfg.progress)
            cache_seconds = time.perf_counter() - t0
        loss_fn = teacher_loss(frozen, cfg.temperature, cfg.alpha, cfg.loss, cache=cache, copy_teacher=False)
        model, targets = student, loss_fn.targets
    adapter_params = sum(p.numel() for p in wrapper.adapters.parameters()) if wrapper else 0
    try:
        result = fit(model, data, tcfg, callbacks=callbacks, loss_fn=loss_fn)
    finally:
        if wrapper is not None:
            wrapper.release()
            loss_fn.capture.remove()
    return DistillResult(result, result.accuracy, targets.hits if targets else 0,
                         targets.misses if targets else 0, cache_seconds, adapter_params)
