"""The fine-tuning defaults of every method, resolved in one place from the model's own training.

A model file records how it was trained (``ModelInfo.train_config()``: its first ``train``
entry). Each compression method fine-tunes with settings derived from that record unless the user
overrides them (:class:`Finetune`); :func:`finetune_settings` is the one rule book, so the command
line and Python callers get the same numbers:

=================  =========================  ====================  ==================  ===============
method             lr                         weight decay          augment             label smoothing
=================  =========================  ====================  ==================  ===============
``prune``          the model's (else 0.01)    the model's (5e-4)    the model's (off)   0 (not used)
``prune_channels`` a tenth of the model's     the model's (5e-4)    the model's (off)   the model's (0)
                   (else 0.01)
``qat``            0.002                      5e-4                  the model's (off)   0
``kmeans``         1e-4 (AdamW on centroids)  0                     the model's (off)   0
``distill``        the student's recipe or    the same              the same (off)      the same
                   recorded training
=================  =========================  ====================  ==================  ===============

On unlabelled data (text) fine-tuning can only distil from the original model, and what it
fine-tunes is a pretrained transformer: ``prune`` then uses the usual transformer recipe instead
of the table's row, AdamW at ``TEXT_LR`` with no weight decay, batches of ``TEXT_BATCH``
sentences, warmed up over the first tenth of an epoch (``TEXT_WARMUP``), with no augmentation;
the user's ``--lr`` / ``--weight-decay`` / ``--optimizer`` still win.

Augmentation (random shifts and flips) is only used when the model's own recipe asked for it: a
model with no recorded training (a third-party model, a plain state dict) fine-tunes on the images
as they are, since a flip that is harmless for clothes turns one digit or letter into another.

Fine-grained pruning keeps the model's LR because its masks only zero weights the model already
had; removing whole channels perturbs the function more, so its fine-tuning restarts gentler. The
centroid LR is small because a centroid's gradient sums over all its member weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..io import ModelInfo
from ..train import TrainConfig

__all__ = ["Finetune", "FinetuneSettings", "finetune_settings", "METHODS"]

METHODS = ("prune", "prune_channels", "qat", "kmeans", "distill")

QAT_LR = 0.002
KMEANS_LR = 1e-4          # AdamW; a centroid's gradient sums over its members
PRUNE_LR = 0.01           # when the file records no training LR
CHANNEL_LR_DIVISOR = 10  # channel pruning fine-tunes at a tenth of the training LR ...
CHANNEL_BASE_LR = 0.1    # ... or of this one when none is recorded
NO_RECORD_AUGMENT = False  # no recorded training: no augmentation (nothing says the data allows it)
TEXT_LR = 1e-4            # AdamW, unlabelled text (a pretrained transformer distilled towards itself)
TEXT_WARMUP = 0.1         # epochs of linear warmup, unlabelled text
TEXT_BATCH = 32           # sentences per step, unlabelled text
TEXT_HIDDEN_WEIGHT = 1.0  # prune on unlabelled data: weight of the per-block hidden-state term (distill/hidden.py)


@dataclass(frozen=True)
class Finetune:
    """The user's fine-tuning choices; ``None``: the method's default for this model."""

    lr: float | None = None
    weight_decay: float | None = None
    augment: bool | None = None
    label_smoothing: float | None = None
    optimizer: str | None = None      # "sgd" or "adam"


@dataclass(frozen=True)
class FinetuneSettings:
    """The settings a method fine-tunes with, every one resolved."""

    lr: float
    weight_decay: float
    augment: bool
    label_smoothing: float
    optimizer: str = "sgd"
    warmup_epochs: float = 0.0
    batch_size: int | None = None     # None: the method's own config default


def _recorded(trained: ModelInfo | dict | None) -> dict:
    if isinstance(trained, ModelInfo):
        return dict(trained.train_config())
    return dict(trained or {})


def _defaults(method: str, t: dict) -> FinetuneSettings:
    wd = t.get("weight_decay", TrainConfig.weight_decay)
    augment = bool(t.get("augment", NO_RECORD_AUGMENT))
    smoothing = t.get("label_smoothing", TrainConfig.label_smoothing)
    if method == "prune":
        return FinetuneSettings(t.get("lr", PRUNE_LR), wd, augment, 0.0)
    if method == "prune_channels":
        return FinetuneSettings(t.get("lr", CHANNEL_BASE_LR) / CHANNEL_LR_DIVISOR, wd, augment, smoothing)
    if method == "qat":
        return FinetuneSettings(QAT_LR, TrainConfig.weight_decay, augment, TrainConfig.label_smoothing)
    if method == "kmeans":
        return FinetuneSettings(KMEANS_LR, 0.0, augment, TrainConfig.label_smoothing)
    if method == "distill":
        return FinetuneSettings(t.get("lr", TrainConfig.lr), wd, augment, smoothing)
    raise ConfigError(f"unknown fine-tuning method {method!r}; choose from {', '.join(METHODS)}")


def finetune_settings(method: str, trained: ModelInfo | dict | None = None,
                      user: Finetune | None = None, *, unlabelled: bool = False) -> FinetuneSettings:
    """The lr, weight decay, augmentation, label smoothing, optimizer and warmup ``method``
    fine-tunes with.

    ``trained``: the model's info (its recorded training is read) or the recorded settings
    themselves; ``user``: choices that win over every default (the command line's ``--lr`` ...);
    ``unlabelled``: the data is text, and ``prune`` takes the text recipe (module docstring).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown fine-tuning method {method!r}; choose from {', '.join(METHODS)}")
    base = (FinetuneSettings(TEXT_LR, 0.0, False, 0.0, "adam", TEXT_WARMUP, TEXT_BATCH) if unlabelled and method == "prune"
            else _defaults(method, _recorded(trained)))
    user = user or Finetune()
    return FinetuneSettings(
        lr=user.lr if user.lr is not None else base.lr,
        weight_decay=user.weight_decay if user.weight_decay is not None else base.weight_decay,
        augment=user.augment if user.augment is not None else base.augment,
        label_smoothing=user.label_smoothing if user.label_smoothing is not None else base.label_smoothing,
        optimizer=user.optimizer if user.optimizer is not None else base.optimizer,
        warmup_epochs=base.warmup_epochs,
        batch_size=base.batch_size,
    )
