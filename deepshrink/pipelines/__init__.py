"""Pipelines: each command of ``deepshrink`` as one library call on files, so Python callers get
exactly what the command line does (the CLI only parses, calls one of these, and prints).

One module per command, each with a ``*_file`` function taking paths and config objects and
returning a result object; :mod:`.defaults` resolves the fine-tuning settings every method uses
from the model's recorded training; :mod:`.inputs` opens a model file and its data set. The Deep
Compression pipeline is :func:`deepshrink.compress.compress_file` (its report:
:mod:`.compress_report`).
"""

from .compare import CompareRun, compare_files
from .decompress import DecompressRun, decompress_file
from .defaults import Finetune, FinetuneSettings, finetune_settings
from .distill import DistillRun, StudentTraining, distill_file
from .early_exit import EarlyExitConfig, EarlyExitRun, early_exit_file, open_early_exit
from .evaluate import EvaluateRun, evaluate_file
from .export import ExportConfig, ExportRun, export_file
from .profile import ProfileRun, profile_file, profile_zoo
from .prune import PruneRun, prune_file
from .prune_channels import ChannelRun, prune_channels_file
from .prune_heads import HeadRun, prune_transformer_file
from .quantize import QuantizeConfig, QuantizeRun, quantize_file
from .sensitivity import ScanConfig, SensitivityResult, sensitivity_file
from .train import TrainRun, train_baseline, train_file

__all__ = [
    "Finetune", "FinetuneSettings", "finetune_settings",
    "train_file", "train_baseline", "TrainRun",
    "evaluate_file", "EvaluateRun",
    "profile_file", "profile_zoo", "ProfileRun",
    "compare_files", "CompareRun",
    "sensitivity_file", "ScanConfig", "SensitivityResult",
    "prune_file", "PruneRun",
    "prune_channels_file", "ChannelRun",
    "prune_transformer_file", "HeadRun",
    "distill_file", "StudentTraining", "DistillRun",
    "quantize_file", "QuantizeConfig", "QuantizeRun",
    "export_file", "ExportConfig", "ExportRun",
    "decompress_file", "DecompressRun",
    "early_exit_file", "EarlyExitConfig", "EarlyExitRun", "open_early_exit",
]
