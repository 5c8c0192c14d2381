"""Knowledge distillation on logits (Hinton, Vinyals & Dean 2015; seed 004).

    L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

averaged over the batch. The T^2 factor keeps the soft term's gradients on the scale of the
hard term's as T grows. :func:`teacher_loss` wraps it as a ``fit`` loss with a frozen
teacher, so pruning and quantization fine-tuning can learn from the uncompressed model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["kd_loss", "teacher_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton's loss; logits (N, classes), labels (N,)."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"need temperature > 0 and alpha in [0, 1] (got {temperature}, {alpha})")
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1 - alpha) * hard


def teacher_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9, copy_teacher: bool = True):
    """A ``fit`` loss ``(model, logits, x, y)`` distilling from a frozen (copied) teacher."""
    kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), temperature, alpha)
    frozen = copy.deepcopy(teacher) if copy_teacher else teacher
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)

    def loss_fn(model, logits, x, y):
        with torch.no_grad():
            target = frozen(x)
        return kd_loss(logits, target, y, temperature, alpha)

    return loss_fn
