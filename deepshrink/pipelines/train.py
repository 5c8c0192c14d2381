"""``deepshrink train`` as one call: a zoo model (or a ``module:callable``) built for a data set,
trained with its baseline recipe (:mod:`deepshrink.models.recipes`) and written as a model file
whose history records the training settings every later step fine-tunes from.

:func:`train_baseline` does it on a data set already in memory (``benchmarks/baselines.py``, the
demo); :func:`train_file` from a data spec, as the command does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .. import data as data_mod
from .. import models
from ..data import Dataset
from ..errors import ModelError
from ..io import ModelInfo, build_arch, save_model
from ..models.recipes import arch_kwargs, recipe
from ..train import FitResult, TrainConfig, distributed_context, fit, seed_everything

__all__ = ["TrainRun", "train_baseline", "train_file"]


@dataclass
class TrainRun:
    model: nn.Module
    info: ModelInfo
    result: FitResult
    rank: int                           # this process's rank (0 writes the file and reports)


def train_baseline(name: str, ds: Dataset, data_spec: str, out: str | os.PathLike | None,
                   cfg: TrainConfig, kwargs: dict | None = None) -> tuple[nn.Module, ModelInfo, FitResult]:
    """Seed, build, train and (on rank 0, when ``out`` is given) save a model."""
    kwargs = arch_kwargs(name, ds, kwargs)
    seed_everything(cfg.seed)
    model = build_arch(ModelInfo(arch=name, kwargs=kwargs), trust_code=True, where="--model")
    result = fit(model, ds, cfg)
    info = ModelInfo(arch=name, kwargs=kwargs, input_shape=list(ds.input_shape), mean=ds.mean, std=ds.std,
                     data=data_spec)
    info.record("train", cfg, accuracy=result.accuracy, seconds=round(result.seconds, 2),
                threads=torch.get_num_threads())
    model.to(memory_format=torch.contiguous_format)
    rank, _ = distributed_context()
    if out and rank == 0:
        save_model(model, out, info)
    return model, info, result


def train_file(name: str, out: str | os.PathLike | None, cfg: TrainConfig | None = None, *,
               data: str = "fashion-mnist", kwargs: dict | None = None) -> TrainRun:
    """Train ``name`` (a zoo name or ``module:callable``) on ``data`` and write it to ``out``.
    ``cfg``: default the model's recipe (``recipe(name)``)."""
    if name not in models.REGISTRY and ":" not in name:
        raise ModelError(f"unknown model {name!r}; the zoo has: {', '.join(models.names())}")
    cfg = cfg or recipe(name)
    ds = data_mod.load(data)
    rank, _ = distributed_context()
    if rank == 0 and cfg.verbose:
        print(f"training {name} on {data}: {len(ds.train)} images, {cfg.epochs} epochs, "
              f"{cfg.optimizer} lr {cfg.lr}", flush=True)
    model, info, result = train_baseline(name, ds, data, out, cfg, kwargs)
    return TrainRun(model, info, result, rank)
