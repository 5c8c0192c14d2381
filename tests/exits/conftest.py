"""Shared by the early-exit tests: a tiny ResNet-20 (one block per stage, 4/8/8 channels) trained a
few epochs on the synthetic 8x8 data, and helpers to give it exit heads."""

from __future__ import annotations

import copy

import pytest
import torch

from deepshrink.models import ResNet20
from deepshrink.train import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny_data(make_dataset):
    return make_dataset(n_train=256, n_test=64, classes=4, hw=8, noise=1.2, seed=0)


@pytest.fixture(scope="module")
def tiny_resnet(tiny_data, one_thread):
    """A trained tiny ResNet-20 in eval mode (copy it before changing it)."""
    torch.manual_seed(0)
    model = ResNet20(num_classes=4, widths=(4, 8, 8), blocks=1)
    fit(model, tiny_data, TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=False, progress=False,
                                      verbose=False, channels_last=False))
    return model.eval()


@pytest.fixture
def fresh(tiny_resnet):
    """A private copy of the trained tiny ResNet-20."""
    return copy.deepcopy(tiny_resnet).eval()
