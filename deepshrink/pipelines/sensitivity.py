"""``deepshrink sensitivity`` as one call: each layer of a model file pruned alone over a sparsity
grid (Han et al. 2015), the curves written as ``sensitivity.json`` and ``sensitivity.png``.

The scan evaluates on the last ``eval_size`` training images by default, so the test split stays
out of every choice made from it (those images were seen in training: accuracies read higher).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..atomic import atomic_write_text
from ..data import Dataset, Split
from ..errors import ConfigError
from ..prune import DEFAULT_GRID, plot_sensitivity, sensitivity_scan
from ..train import evaluate
from .inputs import open_model_and_data

__all__ = ["ScanConfig", "SensitivityResult", "EVAL_ON", "scan_split", "run_scan", "sensitivity_file",
           "scan_files"]

EVAL_ON = ("train-slice", "test")


@dataclass
class ScanConfig:
    """Every default of a sensitivity scan written to a folder."""

    sparsities: tuple[float, ...] = DEFAULT_GRID
    rule: str = "magnitude"
    eval_on: str = "train-slice"        # "train-slice": the last eval_size training images; "test"
    eval_size: int = 5000
    max_drop: float = 0.5               # the plot's budget line, percentage points below dense
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        if self.eval_on not in EVAL_ON:
            raise ConfigError(f"eval_on must be one of {', '.join(EVAL_ON)}, got {self.eval_on!r}")
        if self.eval_on == "train-slice" and self.eval_size < 1:
            raise ConfigError(f"eval_size must be >= 1, got {self.eval_size}")


@dataclass
class SensitivityResult:
    scan: dict                          # sensitivity_scan's dict, with "evaluated_on"
    json_path: Path
    png_path: Path


def scan_files(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The two files a scan writes into ``out_dir``."""
    return Path(out_dir) / "sensitivity.json", Path(out_dir) / "sensitivity.png"


def scan_split(ds: Dataset, eval_on: str, size: int) -> tuple[Split, str]:
    """The split a scan evaluates on, and a label saying which it is."""
    if eval_on == "test":
        return ds.test, f"test split ({len(ds.test)} images)"
    if size < 1:
        raise ConfigError(f"eval_size must be >= 1, got {size}")
    n = min(size, len(ds.train))
    return ds.train.tail(n), f"last {n} images of the training split (seen in training)"


def run_scan(model: nn.Module, ds: Dataset, cfg: ScanConfig, out_dir: str | os.PathLike) -> dict:
    """Scan ``model`` (restored after each layer) and write the JSON and the PNG into ``out_dir``."""
    split, label = scan_split(ds, cfg.eval_on, cfg.eval_size)
    if cfg.verbose:
        print(f"sensitivity scan on the {label}", flush=True)
    scan = sensitivity_scan(model, lambda m: evaluate(m, split), cfg.sparsities, rule=cfg.rule,
                            progress=cfg.progress)
    scan["evaluated_on"] = label
    json_path, png_path = scan_files(out_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(scan, indent=1) + "\n")
    plot_sensitivity(scan, png_path, max_drop=cfg.max_drop / 100)
    return scan


def sensitivity_file(src: str | os.PathLike, out_dir: str | os.PathLike, cfg: ScanConfig | None = None, *,
                     data: str | None = None, arch: str | None = None,
                     trust_code: bool = False) -> SensitivityResult:
    """Scan the model in ``src`` on ``data`` (default: the data set the file records) into ``out_dir``."""
    cfg = cfg or ScanConfig()
    cfg.check()
    model, _, ds = open_model_and_data(src, data, arch, trust_code)
    scan = run_scan(model, ds, cfg, out_dir)
    return SensitivityResult(scan, *scan_files(out_dir))
