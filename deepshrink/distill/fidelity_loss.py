"""Fine-tuning without labels: distil from the original model (Hinton et al. 2015; for sentence
embeddings, Reimers & Gurevych 2020, who train a student embedding to match a teacher's).

Text data carries no labels, so a compressed model is fine-tuned to reproduce its original, the
same fidelity :mod:`deepshrink.fidelity` measures. With ``s`` the student's output row and ``t``
the frozen original's on the same input:

* ``embedding`` (a bare encoder's pooled output, (N, H)):
  ``mean_i (1 - cos(s_i, t_i)) + mse_weight * mean_ij (s_ij - t_ij)^2``; the cosine term is what
  the fidelity report scores, the optional MSE term also keeps the vectors' lengths.
* ``logits`` ((N, C), or (N, L, V) per token): Hinton's soft term alone (alpha = 1, no label term),
  ``T^2 * mean_rows KL(softmax(t / T) || softmax(s / T))``.

The target is the original in eval mode, a deterministic function; dropout in the model being
fine-tuned only adds noise to the distance it minimises (measured on MiniLM: a training loss of
0.10 with dropout against 0.05 without, at the same step), so the pipelines fine-tune inside
:func:`dropout_off`.

The original's outputs are a pure function of the token ids (text is never augmented), so
:func:`cached_fidelity_loss` computes them once for the training split and finds each batch's
rows by content (:mod:`.cache`), exactly as :func:`.run.cached_teacher_loss` does for logits.

With ``hidden_weight > 0`` and a ``student`` to hook, the loss adds ``hidden_weight`` times the
per-block hidden-state distance of :mod:`.hidden`; the original then runs on every batch (its
hidden states are too large to cache), and ``loss_fn.close()`` removes the hooks afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..errors import ConfigError
from ..fidelity import OUTPUT_KINDS, output_kind
from .cache import LogitCache, TeacherTargets, build_logit_cache
from .hidden import HiddenMatch
from .run import freeze_teacher

__all__ = ["fidelity_distance", "fidelity_loss", "cached_fidelity_loss", "dropout_off"]


def fidelity_distance(kind: str, student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
                      mse_weight: float = 0.0) -> torch.Tensor:
    """The batch-mean distance of the student's outputs from the original's (see the module docstring)."""
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"output kind {kind!r}: choose {' or '.join(OUTPUT_KINDS)}")
    if not temperature > 0 or not mse_weight >= 0:
        raise ConfigError(f"need temperature > 0 and mse_weight >= 0 (got {temperature}, {mse_weight})")
    if student.shape != teacher.shape:
        raise ConfigError(f"the model gives outputs of {list(student.shape)}, the original {list(teacher.shape)}")
    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])   # (rows, D)
    if kind == "embedding":
        loss = (1 - F.cosine_similarity(s, t, dim=1)).mean()
        return loss + mse_weight * F.mse_loss(s, t) if mse_weight else loss
    soft = F.kl_div(F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return temperature * temperature * soft


def fidelity_loss(teacher: nn.Module | None, kind: str | None = None, *, temperature: float = 1.0,
                  mse_weight: float = 0.0, cache: LogitCache | None = None, copy_teacher: bool = True,
                  hidden_weight: float = 0.0, student: nn.Module | None = None):
    """A ``fit`` loss ``(model, outputs, x, y)`` that ignores ``y`` and pulls the model's outputs
    towards a frozen (copied) ``teacher``'s: the unlabelled counterpart of :func:`.run.teacher_loss`.

    ``kind``: ``"embedding"`` or ``"logits"`` (default: the teacher's :func:`deepshrink.fidelity.output_kind`);
    ``cache``: the teacher's outputs for a split (other inputs go through the teacher).
    ``loss_fn.targets`` counts cache hits and misses. ``hidden_weight``, ``student``: the
    hidden-state term (module docstring), on the model that will be trained.
    """
    if teacher is None and cache is None:
        raise ConfigError("fidelity_loss needs the original model or a cache of its outputs")
    if not hidden_weight >= 0:
        raise ConfigError(f"need hidden_weight >= 0 (got {hidden_weight})")
    if hidden_weight and (teacher is None or student is None):
        raise ConfigError("the hidden-state term needs the original model and the student to hook")
    kind = kind or (output_kind(teacher) if teacher is not None else "logits")
    fidelity_distance(kind, torch.zeros(1, 2), torch.ones(1, 2), temperature=temperature,
                      mse_weight=mse_weight)   # settings checked now, not at the first batch
    frozen = freeze_teacher(teacher, copy_teacher) if teacher is not None else None
    hidden = HiddenMatch(student, frozen) if hidden_weight else None
    targets = TeacherTargets(frozen, None if hidden else cache)   # the hooks need the live original

    def loss_fn(model, outputs, x, y):
        loss = fidelity_distance(kind, outputs, targets(x), temperature=temperature, mse_weight=mse_weight)
        return loss + hidden_weight * hidden.distance() if hidden is not None else loss

    loss_fn.targets, loss_fn.kind, loss_fn.hidden = targets, kind, hidden
    loss_fn.close = hidden.close if hidden is not None else (lambda: None)
    return loss_fn


def cached_fidelity_loss(teacher: nn.Module, train: Split, augment: bool = False, kind: str | None = None, *,
                         temperature: float = 1.0, mse_weight: float = 0.0, hidden_weight: float = 0.0,
                         student: nn.Module | None = None):
    """:func:`fidelity_loss` from a frozen copy of ``teacher``, its outputs for ``train`` computed
    once unless training augments (augmented inputs are never cached) or the hidden-state term is
    on (the original then runs on every batch)."""
    kind = kind or output_kind(teacher)
    frozen = freeze_teacher(teacher)
    cache = None if augment or hidden_weight else build_logit_cache(frozen, train)
    return fidelity_loss(frozen, kind, temperature=temperature, mse_weight=mse_weight, cache=cache,
                         copy_teacher=False, hidden_weight=hidden_weight, student=student)


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[dict[str, float]]:
    """Every ``nn.Dropout`` of ``model`` at p = 0 inside the block (Hugging Face attention
    dropout reads its module's ``p``), restored afterwards; yields ``{name: the p it had}``."""
    saved = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    modules = dict(model.named_modules())
    for name in saved:
        modules[name].p = 0.0
    try:
        yield saved
    finally:
        for name, p in saved.items():
            modules[name].p = p
