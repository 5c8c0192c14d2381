"""Baseline training recipes: the settings that reach each zoo model's target accuracy.

``deepshrink train --model NAME`` and ``benchmarks/baselines.py`` both train through
:func:`deepshrink.pipelines.train.train_baseline` with :func:`recipe`; any field given overrides
the recipe's.
Targets (Fashion-MNIST test accuracy): lenet300 >= 89.5%,
lenet5 >= 91.0%, vgg >= 93.0%, resnet20 >= 92.5%, mobilenetv2 >= 92.0%.
"""

from __future__ import annotations

import math

from ..data import Dataset
from ..train import TrainConfig
from . import REGISTRY

__all__ = ["RECIPES", "TARGETS", "recipe", "arch_kwargs"]

RECIPES: dict[str, dict] = {
    "lenet300": dict(epochs=30, lr=0.05, weight_decay=1e-4, augment=False),
    "lenet5": dict(epochs=20, lr=0.05, weight_decay=5e-4),
    "vgg": dict(epochs=15, lr=0.05, weight_decay=5e-4, label_smoothing=0.1),
    "resnet20": dict(epochs=15, lr=0.1, weight_decay=5e-4, warmup_epochs=0.5),
    "mobilenetv2": dict(epochs=15, lr=0.1, weight_decay=4e-5, warmup_epochs=0.5),
    # adder nets (Chen et al. 2020): SGD lr 0.1 cosine; the adaptive rate (eta) is a model argument
    "lenet5_adder": dict(epochs=20, lr=0.1, weight_decay=5e-4),
    "resnet20_adder": dict(epochs=15, lr=0.1, weight_decay=5e-4, warmup_epochs=0.5),
}

TARGETS: dict[str, float] = {
    "lenet300": 0.895, "lenet5": 0.910, "vgg": 0.930, "resnet20": 0.925, "mobilenetv2": 0.920,
}


def recipe(name: str, **overrides) -> TrainConfig:
    """The recipe for a zoo model (plain defaults for other names), with overrides applied."""
    fields = {**RECIPES.get(name, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)


def arch_kwargs(name: str, ds: Dataset, extra: dict | None = None) -> dict:
    """Model arguments that fit the data set (classes, channels), then the caller's."""
    kw: dict = {"num_classes": ds.num_classes}
    if name == "lenet300":
        kw["in_features"] = math.prod(ds.input_shape)
    elif name in REGISTRY:
        kw["in_channels"] = ds.input_shape[0]
    return {**kw, **(extra or {})}
