"""layer_stats and the variance formulas of homework 1-5 / 1-6, checked by sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.nn import AdderConv2d, layer_stats
from deepshrink.nn.analysis import predicted_variance

pytestmark = pytest.mark.usefixtures("one_thread")


def test_formulas():
    assert predicted_variance("conv", 100, 2.0, 0.01) == pytest.approx(2.0)
    assert predicted_variance("adder", 100, 1.0, 0.01) == pytest.approx(100 * (1 - 2 / math.pi) * 1.01)


@pytest.mark.parametrize("kind", ["conv", "adder"])
def test_measured_variance_matches_formula_on_gaussian_inputs(kind):
    # X ~ N(0, 1), W ~ N(0, 1 / fan_in): the conv keeps variance ~1, the adder's is ~0.36 * fan_in
    torch.manual_seed(0)
    cin, k = 16, 3
    layer = AdderConv2d(cin, 32, k, bias=False) if kind == "adder" else nn.Conv2d(cin, 32, k, bias=False)
    nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(cin * k * k))
    model = nn.Sequential(layer, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(64, cin, 10, 10)
    (row,) = layer_stats(model, x, torch.randint(0, 32, (64,)))
    assert row.kind == kind and row.fan_in == cin * k * k
    assert row.output_var == pytest.approx(row.predicted_var, rel=0.15)
    if kind == "adder":
        assert row.output_var > 30  # 0.36 * 144 = 52, against ~1 for the convolution


def test_layer_stats_rows_norms_and_no_side_effects():
    torch.manual_seed(0)
    model = models.build("lenet5_adder", eta=0.1)
    bn_before = model.bn1.running_mean.clone()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    rows = layer_stats(model, x, y)
    assert [r.name for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
    assert [r.kind for r in rows] == ["adder", "adder", "adder", "conv"]
    for r in rows[:3]:
        assert r.grad_norm > 0
        assert r.update_norm == pytest.approx(0.1 * math.sqrt(r.weights))
    assert rows[3].update_norm == rows[3].grad_norm
    assert torch.equal(model.bn1.running_mean, bn_before)
    assert all(p.grad is None for p in model.parameters())
    assert model.conv1.eta == 0.1
