"""``deepshrink train`` as one call: a zoo model (or a ``module:callable``) built for a data set,
trained with its baseline recipe (:mod:`deepshrink.models.recipes`) and written as a model file
whose history records the training settings every later step fine-tunes from.

:func:`train_baseline` does it on a data set already in memory (``benchmarks/baselines.py``, the
demo); :func:`train_file` from a data spec, as the command does.

Both hold out the validation split every later command chooses on
(:func:`deepshrink.data.with_validation`, the same seeded carve; ``val_size`` 0: none) and record
it in the ``train`` history entry as ``held_out`` (:mod:`deepshrink.holdout`), with the trained
model's accuracy on it (``val_accuracy``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .. import data as data_mod
from .. import models
from ..data import Dataset
from ..errors import ConfigError, ModelError
from ..holdout import held_out_record
from ..io import ModelInfo, build_arch, save_model
from ..models.recipes import arch_kwargs, recipe
from ..train import FitResult, TrainConfig, distributed_context, evaluate, fit, seed_everything

__all__ = ["TrainRun", "train_baseline", "train_file", "hold_out", "check_train_val_size"]


@dataclass
class TrainRun:
    model: nn.Module
    info: ModelInfo
    result: FitResult
    rank: int                           # this process's rank (0 writes the file and reports)

    @property
    def held_out(self) -> dict:
        """``{"val_size": k, "seed": s, "of_train": n}``: the validation images left out of the training."""
        return self._entry["held_out"]

    @property
    def val_accuracy(self) -> float | None:
        """Accuracy on the held-out validation split (None: none held out, or unlabelled data)."""
        return self._entry.get("val_accuracy")

    @property
    def _entry(self) -> dict:
        return next(h for h in self.info.history if h.get("op") == "train")


def check_train_val_size(size: int | None, what: str = "val_size") -> None:
    """``None`` (the standard carve), 0 (no hold-out: train on every training image) or a whole number >= 1."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ConfigError(f"{what} must be 0 (train on every training image) or a whole number of validation "
                          f"images to hold out, got {size!r}")


def hold_out(ds: Dataset, val_size: int | None = None) -> Dataset:
    """``ds`` with the validation split later commands choose on moved out of ``train``
    (:func:`~deepshrink.data.with_validation`; ``val_size`` None: its default size), or ``ds``
    unchanged with ``val_size`` 0 (every training image is trained on)."""
    check_train_val_size(val_size)
    return ds if val_size == 0 else data_mod.with_validation(ds, val_size)


def train_baseline(name: str, ds: Dataset, data_spec: str, out: str | os.PathLike | None,
                   cfg: TrainConfig, kwargs: dict | None = None,
                   val_size: int | None = None) -> tuple[nn.Module, ModelInfo, FitResult]:
    """Seed, build, train on ``ds.train`` less the validation split (:func:`hold_out` with
    ``val_size``) and (on rank 0, when ``out`` is given) save a model."""
    ds = hold_out(ds, val_size)
    kwargs = arch_kwargs(name, ds, kwargs)
    seed_everything(cfg.seed)
    model = build_arch(ModelInfo(arch=name, kwargs=kwargs), trust_code=True, where="--model")
    result = fit(model, ds, cfg)                      # trains on ds.train: never a validation image
    measured = ds.val is not None and ds.labelled     # one pass over the held-out images
    info = ModelInfo(arch=name, kwargs=kwargs, input_shape=list(ds.input_shape), mean=ds.mean, std=ds.std,
                     data=data_spec)
    info.record("train", cfg, accuracy=result.accuracy, seconds=round(result.seconds, 2),
                threads=torch.get_num_threads(), held_out=held_out_record(ds),
                val_accuracy=evaluate(model, ds.val) if measured else None)
    model.to(memory_format=torch.contiguous_format)
    rank, _ = distributed_context()
    if out and rank == 0:
        save_model(model, out, info)
    return model, info, result


def train_file(name: str, out: str | os.PathLike | None, cfg: TrainConfig | None = None, *,
               data: str = "fashion-mnist", kwargs: dict | None = None, val_size: int | None = None) -> TrainRun:
    """Train ``name`` (a zoo name or ``module:callable``) on ``data`` and write it to ``out``.
    ``cfg``: default the model's recipe (``recipe(name)``). ``val_size``: the validation images held
    out of the training for later choices (None: the standard carve; 0: none)."""
    if name not in models.REGISTRY and ":" not in name:
        raise ModelError(f"unknown model {name!r}; the zoo has: {', '.join(models.names())}")
    cfg = cfg or recipe(name)
    ds = hold_out(data_mod.load(data), val_size)
    rank, _ = distributed_context()
    if rank == 0 and cfg.verbose:
        held = "none held out" if ds.val is None else f"{len(ds.val):,} held out as the validation split"
        print(f"training {name} on {data}: {len(ds.train):,} images ({held}), {cfg.epochs} epochs, "
              f"{cfg.optimizer} lr {cfg.lr}", flush=True)
    model, info, result = train_baseline(name, ds, data, out, cfg, kwargs, val_size)
    return TrainRun(model, info, result, rank)
