"""Tiny seeded models for the quantization tests (BN statistics randomised so folding matters)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


class TinyConvNet(nn.Module):
    """conv-BN-ReLU, max-pool, conv-BN-ReLU, flatten, linear-ReLU, linear; input (N, 1, 8, 8)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(4, 6, 3, stride=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True)
        self.flatten = nn.Flatten()
        self.fc1, self.relu3, self.drop = nn.Linear(6 * 2 * 2, 16), nn.ReLU(), nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))   # (N, 4, 4, 4)
        x = self.relu2(self.bn2(self.conv2(x)))               # (N, 6, 2, 2)
        return self.fc2(self.drop(self.relu3(self.fc1(self.flatten(x)))))


class TinyResNet(nn.Module):
    """Stem, one downsampling basic block (1x1 conv shortcut), one identity block, GAP, fc."""

    def __init__(self, classes: int = 5):
        super().__init__()
        from deepshrink.models.resnet import BasicBlock
        self.conv1, self.bn1, self.relu = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        self.block1, self.block2 = BasicBlock(4, 8, stride=2), BasicBlock(8, 8)
        self.pool, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))                # (N, 4, 8, 8)
        x = self.block2(self.block1(x))                       # (N, 8, 4, 4)
        return self.fc(self.flatten(self.pool(x)))


@pytest.fixture
def tiny_convnet():
    torch.manual_seed(0)
    return _randomise_bn(TinyConvNet(), 1)


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    return _randomise_bn(TinyResNet(), 2)


@pytest.fixture
def images():
    """(64, 1, 8, 8) seeded inputs, a calibration set, and a held-out set."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(64, 1, 8, 8, generator=g), torch.randn(32, 1, 8, 8, generator=g)


@pytest.fixture
def randomise_bn():
    """``randomise_bn(model, seed) -> model`` with random BN statistics and affine terms, eval mode."""
    return _randomise_bn


def make_tiny_bert():
    """A tiny random-weight ``transformers.BertModel`` (no weights downloaded), eval mode."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64)
    return transformers.BertModel(cfg).eval()


@pytest.fixture
def tiny_bert():
    torch.manual_seed(0)
    return make_tiny_bert()


@pytest.fixture
def token_ids():
    """(8, 16) seeded token ids of the tiny BERT's 100-word vocabulary."""
    return torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(4))
