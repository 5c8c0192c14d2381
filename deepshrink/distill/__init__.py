"""Knowledge distillation: losses on logits and features, cached teacher logits, and training.

``kd_loss`` (Hinton et al. 2015), ``l2_loss``/``cosine_loss`` on logits, feature matching on
named layers with learned adapters, ``teacher_loss`` (a ``fit`` loss from a frozen teacher, the
hook pruning and quantization fine-tuning use) and ``distill`` (teacher to student).
"""

from .losses import FEATURE_LOSSES, LOSSES, kd_loss
from .run import DistillConfig, cached_teacher_loss, distill, freeze_teacher, teacher_loss, with_input_stats

# What a user calls; the logit cache and feature capture are imported from their own modules
# (``deepshrink.distill.cache``, ``deepshrink.distill.features``).
__all__ = [
    "DistillConfig", "distill", "teacher_loss", "cached_teacher_loss", "freeze_teacher", "with_input_stats",
    "kd_loss", "LOSSES", "FEATURE_LOSSES",
]
