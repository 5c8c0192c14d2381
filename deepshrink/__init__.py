"""deepshrink: make trained PyTorch models smaller and faster while keeping their accuracy.

Measure (``profile_model``), prune (``deepshrink.prune``: fine-grained and channels), quantize
(``deepshrink.quant``: linear int8, QAT, integer engine, ONNX, k-means), encode
(``deepshrink.codec``: the .dsz file; ``deepshrink.compress``: the Deep Compression pipeline),
distil (``deepshrink.distill``), AdderNet layers (``deepshrink.nn``), and save/load models
safely (``save_model`` / ``load_model``); ``deepshrink.pipelines`` does what each command does, on
files (``prune_file``, ``quantize_file``, ...). Nothing runs at import time.
"""

from . import codec, compress, data, distill, models, nn, pipelines, profile, prune, quant
from .errors import ConfigError, DataError, DeepShrinkError, FormatError, ModelError
from .io import ModelInfo, load_model, save_model
from .profile import compare_latency, measure_latency, model_size, profile_model
from .train import TrainConfig, evaluate, fine_tune, fit

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "codec", "compress", "data", "distill", "models", "nn", "pipelines", "profile", "prune", "quant",
    "DeepShrinkError", "DataError", "FormatError", "ModelError", "ConfigError",
    "ModelInfo", "save_model", "load_model",
    "profile_model", "measure_latency", "compare_latency", "model_size",
    "TrainConfig", "fit", "evaluate", "fine_tune",
]
