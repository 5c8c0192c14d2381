"""Baseline training recipes: the settings that reach each zoo model's target accuracy.

``deepshrink train --model NAME`` starts from these; any flag given overrides its field.
Targets (Fashion-MNIST test accuracy, issue "Foundation"): lenet300 >= 89.5%,
lenet5 >= 91.0%, vgg >= 93.0%, resnet20 >= 92.5%, mobilenetv2 >= 92.0%.
"""

from __future__ import annotations

from ..train import TrainConfig

__all__ = ["RECIPES", "recipe"]

RECIPES: dict[str, dict] = {
    "lenet300": dict(epochs=30, lr=0.05, weight_decay=1e-4, augment=False),
    "lenet5": dict(epochs=20, lr=0.05, weight_decay=5e-4),
    "vgg": dict(epochs=15, lr=0.05, weight_decay=5e-4, label_smoothing=0.1),
    "resnet20": dict(epochs=15, lr=0.1, weight_decay=5e-4, warmup_epochs=0.5),
    "mobilenetv2": dict(epochs=15, lr=0.1, weight_decay=4e-5, warmup_epochs=0.5),
}


def recipe(name: str, **overrides) -> TrainConfig:
    """The recipe for a zoo model (plain defaults for other names), with overrides applied."""
    fields = {**RECIPES.get(name, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)
