"""The adder zoo models and the profiler's counts for adder layers (additions only, 0 MACs)."""

from __future__ import annotations

import pytest
import torch

from deepshrink import models
from deepshrink.nn import AdderConv2d, AdderLinear
from deepshrink.profile import profile_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _row(prof, name):
    (row,) = [r for r in prof.rows if r.name == name]
    return row


def test_adder_conv_counts_additions_only():
    layer = AdderConv2d(3, 4, 3, padding=1, bias=True)
    prof = profile_model(layer, torch.zeros(2, 3, 5, 5))
    (row,) = prof.rows
    outputs, K = 2 * 4 * 5 * 5, 3 * 3 * 3
    assert row.known and row.macs == 0 and row.nonzero_macs == 0 and row.multiplications == 0
    assert row.additions == outputs * (2 * K - 1) + outputs      # K subs, K - 1 adds, the bias
    assert row.memory_reads == 2 * outputs * K and row.memory_writes == outputs


def test_adder_linear_counts_without_bias():
    prof = profile_model(AdderLinear(10, 6, bias=False), torch.zeros(3, 10))
    (row,) = prof.rows
    assert (row.macs, row.multiplications, row.additions) == (0, 0, 3 * 6 * (2 * 10 - 1))


def test_lenet5_adder_profile():
    torch.manual_seed(0)
    model = models.build("lenet5_adder")
    prof = profile_model(model, torch.zeros(1, 1, 28, 28))
    assert all(r.known for r in prof.rows)
    assert prof.totals["macs"] == 500 * 10                      # only the linear classifier
    assert _row(prof, "conv2").additions == 50 * 8 * 8 * (2 * 500 - 1)
    assert _row(prof, "fc1").additions == 500 * (2 * 800 - 1)
    # LeNet-5 has 2,293,000 MACs; the adder layers do 2 additions for each of the first three's
    cnn = profile_model(models.build("lenet5"), torch.zeros(1, 1, 28, 28)).totals
    assert cnn["macs"] - prof.totals["macs"] == 288_000 + 1_600_000 + 400_000
    all_adder = profile_model(models.build("lenet5_adder", adder_classifier=True), torch.zeros(1, 1, 28, 28))
    assert all_adder.totals["macs"] == 0


@pytest.mark.parametrize("name,shape", [("lenet5_adder", (4, 10)), ("resnet20_adder", (2, 10))])
def test_zoo_models_train_a_step(name, shape):
    torch.manual_seed(0)
    model = models.build(name)
    x = torch.randn(shape[0], 1, 28, 28)
    out = model(x)
    assert out.shape == shape
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    n_adder = sum(isinstance(m, (AdderConv2d, AdderLinear)) for m in model.modules())
    assert n_adder == (3 if name == "lenet5_adder" else 20)   # resnet: 18 block convs + 2 shortcuts


def test_resnet20_adder_profile_keeps_stem_and_fc_only():
    prof = profile_model(models.build("resnet20_adder"), torch.zeros(1, 1, 28, 28))
    assert all(r.known for r in prof.rows)
    assert prof.totals["macs"] == 16 * 28 * 28 * 9 + 64 * 10     # 3x3 stem + fc
