"""Distillation losses on logits and on features (Hinton, Vinyals & Dean 2015).

Logits ``z_s`` (student) and ``z_t`` (teacher), both (N, classes), labels ``y`` (N,):

* ``kl``      alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y).
              The T^2 factor keeps the soft term's gradients on the scale of the hard term's
              as T grows (the soft gradients shrink as 1/T^2).
* ``l2``      alpha * mean_i ||z_s - z_t||^2 / classes + (1 - alpha) * CE: regression on the
              logits (Ba & Caruana 2014); the limit of the KL term for large T, up to scale.
* ``cosine``  alpha * mean_i (1 - cos(z_s, z_t)) + (1 - alpha) * CE: matches the direction of
              the logit vector only.

KL is the default; BENCHMARKS.md compares the three. All are batch means, so
``alpha = 0`` is plain cross-entropy. Features use the same L2/cosine distances per sample
after flattening (:func:`feature_distance`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["LOSSES", "FEATURE_LOSSES", "kd_loss", "l2_loss", "cosine_loss", "logit_loss",
           "feature_distance", "check_settings"]

LOSSES = ("kl", "l2", "cosine")
FEATURE_LOSSES = ("l2", "cosine")


def check_settings(temperature: float, alpha: float, loss: str = "kl") -> None:
    """Raise :class:`ConfigError` for a temperature <= 0, alpha outside [0, 1] or an unknown loss."""
    if loss not in LOSSES:
        raise ConfigError(f"distillation loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not temperature > 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"need temperature > 0 and alpha in [0, 1] (got {temperature}, {alpha})")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton's loss; logits (N, classes), labels (N,)."""
    check_settings(temperature, alpha)
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1 - alpha) * hard


def l2_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float = 0.9) -> torch.Tensor:
    """Logit regression: mean squared difference per logit, mixed with cross-entropy."""
    check_settings(1.0, alpha)
    soft = F.mse_loss(student_logits, teacher_logits)  # mean over N * classes
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def cosine_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                alpha: float = 0.9) -> torch.Tensor:
    """Cosine distance between logit vectors, mixed with cross-entropy."""
    check_settings(1.0, alpha)
    soft = (1 - F.cosine_similarity(student_logits, teacher_logits, dim=1)).mean()
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def logit_loss(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               labels: torch.Tensor, temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """The loss called ``name`` (one of :data:`LOSSES`); the temperature only affects ``kl``."""
    check_settings(temperature, alpha, name)
    if name == "kl":
        return kd_loss(student_logits, teacher_logits, labels, temperature, alpha)
    if name == "l2":
        return l2_loss(student_logits, teacher_logits, labels, alpha)
    return cosine_loss(student_logits, teacher_logits, labels, alpha)


def feature_distance(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch-mean distance between features of equal shape (N, ...): ``l2`` (mean squared
    difference per element) or ``cosine`` (1 - cosine similarity of the flattened features)."""
    if name not in FEATURE_LOSSES:
        raise ConfigError(f"feature loss must be one of {', '.join(FEATURE_LOSSES)}, got {name!r}")
    if student.shape != teacher.shape:
        raise ConfigError(f"feature shapes differ after the adapter: {tuple(student.shape)} "
                          f"vs {tuple(teacher.shape)}")
    if name == "l2":
        return F.mse_loss(student, teacher)
    s, t = student.flatten(1), teacher.flatten(1)  # (N, D)
    return (1 - F.cosine_similarity(s, t, dim=1)).mean()
