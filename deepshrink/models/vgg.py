"""A VGG-style CNN with BatchNorm for 28x28 inputs (Simonyan & Zisserman 2015, scaled down).

Three stages of two 3x3 conv-BN-ReLU layers each, max-pooled between stages:
28x28 -> 14x14 -> 7x7 -> 3x3, then flatten and a two-layer classifier.
"""

from __future__ import annotations

from torch import nn

__all__ = ["VGG"]

DEFAULT_CFG = (32, 32, "M", 64, 64, "M", 128, 128, "M")


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, cfg=DEFAULT_CFG,
                 hidden: int = 256, dropout: float = 0.3, input_size: int = 28):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, input_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()  # (N, C * size * size): a channel is a block of columns
        self.classifier = nn.Sequential(
            nn.Linear(c * size * size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))
