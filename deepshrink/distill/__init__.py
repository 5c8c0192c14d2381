"""Knowledge distillation: losses on logits and features, cached teacher logits, and training.

``kd_loss`` (Hinton et al. 2015), ``l2_loss``/``cosine_loss`` on logits, feature matching on
named layers with learned adapters, ``teacher_loss`` (a ``fit`` loss from a frozen teacher, the
hook pruning and quantization fine-tuning use) and ``distill`` (teacher to student).
"""

from .cache import (LogitCache, TeacherTargets, build_logit_cache, cached_teacher_logits, file_sha256,
                    fingerprint, load_logit_cache, save_logit_cache)
from .features import FeatureCapture, FeatureStudent, parse_pairs
from .losses import FEATURE_LOSSES, LOSSES, cosine_loss, feature_distance, kd_loss, l2_loss, logit_loss
from .run import (DistillConfig, DistillResult, cached_teacher_loss, distill, freeze, load_teacher, teacher_loss,
                  with_input_stats)

__all__ = [
    "LOSSES", "FEATURE_LOSSES", "kd_loss", "l2_loss", "cosine_loss", "logit_loss", "feature_distance",
    "fingerprint", "LogitCache", "TeacherTargets", "build_logit_cache", "save_logit_cache",
    "load_logit_cache", "cached_teacher_logits", "file_sha256",
    "FeatureCapture", "FeatureStudent", "parse_pairs",
    "DistillConfig", "DistillResult", "teacher_loss", "cached_teacher_loss", "distill", "freeze", "with_input_stats",
    "load_teacher",
]
