"""``deepshrink distill`` as one call: a student trained against a teacher model file's soft
targets (Hinton et al. 2015) and optionally its features on named layers (FitNets: Romero et
al. 2015), written as a model file.

The student is a zoo name (built for the data, trained from scratch with its recipe) or a model
file (trained on from its weights, :data:`FILE_EPOCHS` epochs by default). Its training settings
are its recipe's or its recorded ones; lr, weight decay, augmentation and label smoothing go through
:func:`.defaults.finetune_settings` (method ``distill``), the rest through :class:`StudentTraining`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data as data_mod
from .. import models
from ..data import Dataset
from ..distill import DistillConfig, distill, with_input_stats
from ..distill.run import DistillResult
from ..errors import ConfigError, DataError
from ..io import ModelInfo, build_arch, load_model, save_model
from ..models.recipes import arch_kwargs, recipe
from ..train import TrainConfig, evaluate, seed_everything
from .defaults import Finetune, finetune_settings

__all__ = ["StudentTraining", "DistillRun", "distill_file", "FILE_EPOCHS"]

FILE_EPOCHS = 5   # a student file trains on this long unless told


@dataclass
class StudentTraining:
    """How the student trains, besides :class:`.defaults.Finetune`'s settings; ``None``: the
    student's recipe (a zoo name) or its recorded training (a file)."""

    epochs: int | None = None
    batch_size: int | None = None
    # At T >= 2 the distillation gradients, about T (p_s - p_t), can kill every ReLU of a student
    # without BatchNorm at its recipe's LR: a linear warmup over the first epoch prevents it.
    warmup_epochs: float = 1.0
    seed: int = 0
    progress: bool = True
    verbose: bool = True


@dataclass
class DistillRun:
    model: nn.Module                    # the trained student
    info: ModelInfo                     # what was written
    result: DistillResult
    teacher_accuracy: float
    train: TrainConfig                  # the student's training settings, resolved


def _student(student: str, kwargs: dict | None, data: str | None, teacher: str, teacher_info: ModelInfo,
             seed: int, arch: str | None, trust_code: bool) -> tuple[nn.Module, ModelInfo, Dataset, dict, bool]:
    """(model, info, data set, recorded training settings, is_file) for ``student``."""
    if student in models.REGISTRY:
        spec = data_mod.spec_from_file(data, teacher_info.data, teacher, trust_code)
        ds = data_mod.load(spec)
        kw = arch_kwargs(student, ds, kwargs)
        seed_everything(seed)
        model = build_arch(ModelInfo(arch=student, kwargs=kw), trust_code=False, where="--student")
        info = ModelInfo(arch=student, kwargs=kw, input_shape=list(ds.input_shape), mean=ds.mean,
                         std=ds.std, data=spec)
        return model, info, ds, dict(asdict(recipe(student))), False
    if not Path(student).exists():
        raise ConfigError(f"--student {student!r}: neither a zoo model ({', '.join(models.names())}) "
                          "nor an existing file")
    if kwargs:
        raise ConfigError("--kwargs only applies to a zoo student, not to a model file")
    model, info = load_model(student, arch=arch, trust_code=trust_code)
    spec = data_mod.spec_from_file(data, info.data if info.data is not None else teacher_info.data,
                                   student if info.data is not None else teacher, trust_code)
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    return model, info, ds, {**info.train_config(), "epochs": FILE_EPOCHS}, True


def _train_config(trained: dict, training: StudentTraining, finetune: Finetune | None) -> TrainConfig:
    fields = set(TrainConfig.__dataclass_fields__) - {"checkpoint", "checkpoint_every", "progress", "verbose"}
    base = {k: v for k, v in trained.items() if k in fields}
    tune = finetune_settings("distill", trained, finetune)
    over = {"epochs": training.epochs, "batch_size": training.batch_size, "warmup_epochs": training.warmup_epochs}
    tcfg = TrainConfig(**{**base, "lr": tune.lr, "weight_decay": tune.weight_decay, "augment": tune.augment,
                          "label_smoothing": tune.label_smoothing, **{k: v for k, v in over.items() if v is not None},
                          "seed": training.seed, "eval_every": 0, "progress": training.progress,
                          "verbose": training.verbose})
    tcfg.check()
    return tcfg


def distill_file(teacher: str | os.PathLike, student: str, out: str | os.PathLike, cfg: DistillConfig | None = None,
                 *, training: StudentTraining | None = None, finetune: Finetune | None = None,
                 kwargs: dict | None = None, data: str | None = None, arch: str | None = None,
                 trust_code: bool = False, seq_len: int | None = None, tokenizer: str | None = None) -> DistillRun:
    """Train ``student`` (a zoo name, with ``kwargs``, or a model file) against the model file
    ``teacher`` and write it to ``out``. ``data``: default the student file's data set, else the
    teacher's; ``arch``/``trust_code`` apply to both files."""
    cfg = cfg or DistillConfig()
    cfg.check()  # bad settings fail before any file is read
    training = training or StudentTraining()
    teacher = os.fspath(teacher)
    teacher_model, tinfo = load_model(teacher, arch=arch, trust_code=trust_code, seq_len=seq_len, tokenizer=tokenizer)
    model, info, ds, trained, from_file = _student(student, kwargs, data, teacher, tinfo, training.seed, arch,
                                                   trust_code)
    if list(ds.input_shape) != list(tinfo.input_shape) or list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"images are {list(ds.input_shape)}; the teacher expects {list(tinfo.input_shape)}, "
                        f"the student {list(info.input_shape)}")
    teacher_model = with_input_stats(teacher_model, ds.mean, ds.std, tinfo.mean, tinfo.std)
    tcfg = _train_config(trained, training, finetune)
    if training.verbose:
        print(f"teacher {teacher}: measuring its accuracy on the {len(ds.test):,} test images ...", flush=True)
    t_acc = evaluate(teacher_model, ds.test, progress=training.progress, desc="teacher test accuracy")
    if training.verbose:
        print(f"teacher {teacher}: {t_acc * 100:.2f}% on the test split; student {student}: "
              f"{sum(p.numel() for p in model.parameters()):,} params, "
              f"{tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''} "
              f"({'SGD' if tcfg.optimizer == 'sgd' else 'AdamW'}, lr {tcfg.lr:g}, on {len(ds.train):,} images), "
              f"loss {cfg.loss}" + (f" (T={cfg.temperature})" if cfg.loss == "kl" else "") + f", alpha {cfg.alpha}"
              + ("; teacher logits cached first" if cfg.cache and not tcfg.augment and not cfg.features else
                 "; teacher run on every batch"), flush=True)
    t0 = time.perf_counter()
    res = distill(teacher_model, model, ds, cfg, tcfg)
    model.to(memory_format=torch.contiguous_format)
    info.record("distill" if from_file else "train", tcfg, accuracy=res.accuracy,
                seconds=round(time.perf_counter() - t0, 2), threads=torch.get_num_threads(),
                distill={"teacher": teacher, "teacher_arch": tinfo.arch, "teacher_accuracy": t_acc, **asdict(cfg),
                         "cache_hits": res.cache_hits, "cache_misses": res.cache_misses,
                         "adapter_params": res.adapter_params})
    save_model(model, out, info)
    return DistillRun(model, info, res, t_acc, tcfg)
