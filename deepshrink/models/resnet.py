"""A ResNet-20-style network for 28x28 inputs (He et al. 2016, the CIFAR variant).

A 3x3 stem, three stages of three basic blocks (16, 32, 64 channels; the last two stages
halve the resolution), global average pooling and one linear layer: 19 convs + 1 fc.
Downsampling shortcuts are 1x1 conv + BN (option B), so every add joins two real tensors.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BasicBlock", "ResNet20"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):  # (N, cin, H, W) -> (N, cout, H/stride, W/stride)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """``block(cin, cout, stride)`` builds each residual block (AdderNet's variant passes its own)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths=(16, 32, 64),
                 blocks: int = 3, block=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            make = block or BasicBlock
            layer = [make(c, w, stride)] + [make(w, w, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            c = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))   # (N, 16, 28, 28)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, 7, 7)
        return self.fc(self.flatten(self.pool(x)))
