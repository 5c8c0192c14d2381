"""deepshrink: make trained PyTorch models smaller and faster while keeping their accuracy.

Measure (``profile_model``), prune (``deepshrink.prune``), and save/load models safely
(``save_model`` / ``load_model``). Nothing runs at import time.
"""

from . import data, distill, models, profile, prune
from .errors import ConfigError, DataError, DeepShrinkError, FormatError, ModelError
from .io import ModelInfo, load_model, save_model
from .profile import compare_latency, measure_latency, model_size, profile_model
from .train import TrainConfig, evaluate, fine_tune, fit

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "data", "distill", "models", "profile", "prune",
    "DeepShrinkError", "DataError", "FormatError", "ModelError", "ConfigError",
    "ModelInfo", "save_model", "load_model",
    "profile_model", "measure_latency", "compare_latency", "model_size",
    "TrainConfig", "fit", "evaluate", "fine_tune",
]
