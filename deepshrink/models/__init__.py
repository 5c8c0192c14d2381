"""The model zoo: small networks for 28x28 single-channel images, built by name.

``build(name, **kwargs)`` looks the name up in an explicit registry; the kwargs are stored in
model files so loading rebuilds the same architecture without importing user code.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ModelError
from .adder import LeNet5Adder, ResNet20Adder
from .lenet import LeNet300, LeNet5
from .mobilenet import MobileNetV2
from .resnet import ResNet20
from .vgg import VGG

__all__ = ["REGISTRY", "build", "names", "LeNet300", "LeNet5", "VGG", "ResNet20", "MobileNetV2",
           "LeNet5Adder", "ResNet20Adder"]

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "vgg": VGG,
    "resnet20": ResNet20,
    "mobilenetv2": MobileNetV2,
    "lenet5_adder": LeNet5Adder,
    "resnet20_adder": ResNet20Adder,
}


def names() -> list[str]:
    return list(REGISTRY)


def build(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name; unknown names and arguments are errors, never ignored."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; the zoo has: {', '.join(REGISTRY)}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ModelError(f"model {name!r}: bad arguments {kwargs} ({exc})") from None
