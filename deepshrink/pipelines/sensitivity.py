"""``deepshrink sensitivity`` as one call: each layer of a model file pruned alone over a sparsity
grid (Han et al. 2015), the curves written as ``sensitivity.json`` and ``sensitivity.png``.

The scan evaluates on the validation split carved from the training split
(:func:`deepshrink.data.with_validation`: 10% of it, at most 5,000 images, unless ``val_size``
says otherwise): the choices made from a scan never see the test split. On unlabelled data
(text) each pruned copy is scored by its fidelity to the unpruned model
(:func:`deepshrink.scoring.scorer_for`: the mean cosine of the embeddings, or the top-1 agreement
of the logits) instead of accuracy; the scan records which in ``metric``.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..atomic import atomic_write_text
from ..data import Dataset, check_val_size, val_label, with_validation
from ..holdout import warn_if_trained_on
from ..prune import DEFAULT_GRID, plot_sensitivity, sensitivity_scan
from ..scoring import scorer_for
from .inputs import open_model_and_data

__all__ = ["ScanConfig", "SensitivityResult", "run_scan", "sensitivity_file", "scan_files"]


@dataclass
class ScanConfig:
    """Every default of a sensitivity scan written to a folder."""

    sparsities: tuple[float, ...] = DEFAULT_GRID
    rule: str = "magnitude"
    include: tuple[str, ...] = ()       # name globs adding / removing scanned weights (deepshrink/targets.py;
    exclude: tuple[str, ...] = ()       # default: the Linear/Conv weights but the output layer's)
    val_size: int | None = None         # validation images carved from the training split (None: 10%, <= 5,000)
    max_drop: float = 0.5               # the plot's budget line, percentage points below dense
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        check_val_size(self.val_size, "val_size")


@dataclass
class SensitivityResult:
    scan: dict                          # sensitivity_scan's dict, with "evaluated_on"
    json_path: Path
    png_path: Path


def scan_files(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The two files a scan writes into ``out_dir``."""
    return Path(out_dir) / "sensitivity.json", Path(out_dir) / "sensitivity.png"


def run_scan(model: nn.Module, ds: Dataset, cfg: ScanConfig, out_dir: str | os.PathLike) -> dict:
    """Scan ``model`` (restored after each layer) on ``ds``'s validation split (carved with
    ``cfg.val_size`` unless ``ds`` has one) and write the JSON and the PNG into ``out_dir``.
    Unlabelled data is scored by fidelity to a copy of ``model`` taken now."""
    ds = with_validation(ds, cfg.val_size)
    label = val_label(ds)
    score = scorer_for(ds, None if ds.labelled else copy.deepcopy(model).eval())
    if cfg.verbose:
        print(f"sensitivity scan on {label}, scored by {score.name}", flush=True)
    scan = sensitivity_scan(model, lambda m: score(m, ds.val), cfg.sparsities, rule=cfg.rule,
                            progress=cfg.progress, include=cfg.include, exclude=cfg.exclude)
    scan["metric"] = score.name
    scan["evaluated_on"] = label
    scan["split"] = "validation"
    scan["val_images"] = len(ds.val)
    json_path, png_path = scan_files(out_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(scan, indent=1) + "\n")
    plot_sensitivity(scan, png_path, max_drop=cfg.max_drop / 100)
    return scan


def sensitivity_file(src: str | os.PathLike, out_dir: str | os.PathLike, cfg: ScanConfig | None = None, *,
                     data: str | None = None, arch: str | None = None,
                     trust_code: bool = False, seq_len: int | None = None,
                     tokenizer: str | None = None, model_kwargs: dict | None = None) -> SensitivityResult:
    """Scan the model in ``src`` on ``data`` (default: the data set the file records) into ``out_dir``."""
    cfg = cfg or ScanConfig()
    cfg.check()
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer,
                                          model_kwargs=model_kwargs, need_labels=False)
    ds = with_validation(ds, cfg.val_size)             # the split run_scan chooses on (it keeps this one)
    warn_if_trained_on(src, info, ds)
    scan = run_scan(model, ds, cfg, out_dir)
    return SensitivityResult(scan, *scan_files(out_dir))
