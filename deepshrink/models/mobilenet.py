"""A MobileNetV2-style network for 28x28 inputs (Sandler et al. 2018).

Inverted residual blocks: 1x1 expansion by t, 3x3 depthwise (groups == channels), 1x1 linear
projection; a residual add where stride is 1 and widths match. The stage table is scaled
down from ImageNet's for 28x28 Fashion-MNIST.
"""

from __future__ import annotations

from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion t, output channels c, repeats n, first stride s)
# The first block halves 28x28 to 14x14: depthwise layers are memory-bound on CPUs, and
# full-resolution expansion would triple the training time for little accuracy.
DEFAULT_STAGES = ((1, 16, 1, 2), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 1), (6, 96, 1, 1))


def _conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        layers = []
        if t != 1:
            layers.append(_conv_bn(cin, hidden, 1))                          # expand
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))     # depthwise
        layers.append(_conv_bn(hidden, cout, 1, act=False))                   # project
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_res else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, stages=DEFAULT_STAGES,
                 stem: int = 16, last: int = 256, dropout: float = 0.2):
        super().__init__()
        self.stem = _conv_bn(in_channels, stem, 3)                 # (N, 16, 28, 28)
        blocks, c = [], stem
        for t, cout, n, s in stages:
            for i in range(n):
                blocks.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        self.blocks = nn.Sequential(*blocks)                       # (N, 96, 7, 7)
        self.head = _conv_bn(c, last, 1)                           # (N, 256, 7, 7)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.drop(self.flatten(self.pool(x))))
