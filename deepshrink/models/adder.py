"""Adder networks for the zoo: LeNet-5 and ResNet-20 with AdderNet layers (Chen et al. 2020).

An adder layer's output has a large, input-dependent mean and a variance that grows with its
fan-in (docs/METHODS.md, "AdderNet"), so every adder layer is followed by BatchNorm. ``eta``
is the per-layer adaptive learning rate (``deepshrink.nn.adaptive``) applied in each adder
layer's backward; ``eta=None`` trains with the plain full-precision gradient.

* ``LeNet5Adder``: LeNet-5's conv1, conv2 and fc1 as adder layers, each followed by BN;
  the 500 -> classes classifier stays a linear layer (5,000 MACs, 0.2% of LeNet-5's), as the
  paper keeps the last layer, unless ``adder_classifier=True`` (then adder + BN as well).
* ``ResNet20Adder``: ResNet-20 with all 18 block convolutions and the 1x1 downsampling
  shortcuts as adder layers; the 3x3 stem and the final linear layer stay multiplications,
  as in the paper's CIFAR ResNet-20.
"""

from __future__ import annotations

from torch import nn

from ..nn import AdderConv2d, AdderLinear
from .resnet import ResNet20

__all__ = ["LeNet5Adder", "AdderBlock", "ResNet20Adder"]


class LeNet5Adder(nn.Module):
    """LeNet-5 (Caffe's widths) with adder layers and BatchNorm after each."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3,
                 conv1: int = 20, conv2: int = 50, fc1: int = 500, eta: float | None = 0.1,
                 adder_classifier: bool = False):
        super().__init__()
        self.conv1 = AdderConv2d(in_channels, conv1, 5, bias=False, eta=eta)   # (N, 20, 24, 24)
        self.bn1 = nn.BatchNorm2d(conv1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                              # (N, 20, 12, 12)
        self.conv2 = AdderConv2d(conv1, conv2, 5, bias=False, eta=eta)          # (N, 50, 8, 8)
        self.bn2 = nn.BatchNorm2d(conv2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)                                              # (N, 50, 4, 4)
        self.flatten = nn.Flatten()                                               # (N, 800)
        self.fc1 = AdderLinear(conv2 * 16, fc1, bias=False, eta=eta)
        self.bn3 = nn.BatchNorm1d(fc1)
        self.relu3 = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        if adder_classifier:
            self.fc2 = nn.Sequential(AdderLinear(fc1, num_classes, bias=False, eta=eta),
                                     nn.BatchNorm1d(num_classes))
        else:
            self.fc2 = nn.Linear(fc1, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.drop(self.relu3(self.bn3(self.fc1(self.flatten(x)))))
        return self.fc2(x)


class AdderBlock(nn.Module):
    """ResNet basic block with adder convolutions (option-B shortcut: 1x1 adder + BN)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, eta: float | None = 0.1):
        super().__init__()
        self.conv1 = AdderConv2d(cin, cout, 3, stride, 1, bias=False, eta=eta)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = AdderConv2d(cout, cout, 3, 1, 1, bias=False, eta=eta)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(AdderConv2d(cin, cout, 1, stride, bias=False, eta=eta),
                                          nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):  # (N, cin, H, W) -> (N, cout, H/stride, W/stride)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet20Adder(ResNet20):
    """ResNet-20 with adder blocks; the stem conv and the classifier stay ordinary (as in the paper)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths=(16, 32, 64),
                 blocks: int = 3, eta: float | None = 0.1):
        super().__init__(num_classes, in_channels, widths, blocks,
                         block=lambda cin, cout, stride: AdderBlock(cin, cout, stride, eta))
