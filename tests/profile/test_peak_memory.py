"""Peak inference memory (deepshrink.profile.peak_memory): hand-computed oracles on a chain of
Linear layers and on a small residual CNN that is not in the zoo, predicted vs measured within
10% on every zoo model at batch 1 and 32, and the per-layer rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.profile.peak_memory import peak_memory, resident_bytes

F32 = 4
# the zoo models of issue #20 (the AdderNet variants keep a loop's last block in a Python local, which no op
# graph shows: benchmarks/peak_memory.py reports them)
ZOO = ["lenet300", "lenet5", "vgg", "resnet20", "mobilenetv2"]


def _weights(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def test_linear_chain_is_weights_plus_input_plus_the_two_largest_consecutive_activations():
    torch.manual_seed(0)
    widths, n = [8, 64, 16, 48, 4], 3
    model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:])])
    r = peak_memory(model, torch.randn(n, widths[0]))
    w = sum(a * b + b for a, b in zip(widths, widths[1:])) * F32
    acts = [n * c * F32 for c in widths[1:]]              # 768, 192, 576, 48 bytes
    # layer k runs while its argument (layer k-1's output, held by nn.Sequential) is alive
    pair = max(a + b for a, b in zip(acts, acts[1:]))     # 768 + 192
    assert r.weights_bytes == w == resident_bytes(model) and r.input_bytes == n * 8 * F32
    assert r.predicted_peak_bytes == w + n * 8 * F32 + pair
    assert r.measured_peak_bytes == r.predicted_peak_bytes == r.predicted_last_use_peak_bytes
    assert r.allocator_peak_bytes is not None and r.allocator_peak_bytes >= r.measured_peak_bytes
    assert [row.name for row in r.rows] == ["0", "1", "2", "3"]
    assert [row.allocated_bytes for row in r.rows] == acts    # aten.t is a view: nothing allocated
    assert r.output_bytes == acts[-1] and r.batch == n


class ResidualCNN(nn.Module):
    """Not in the zoo: y is kept for a residual add, relu and the add run between layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv1(x)
        z = torch.relu(self.conv2(y))
        s = y + z
        return self.head(s.mean(dim=(2, 3)))


def test_residual_cnn_by_hand():
    model = ResidualCNN()
    r = peak_memory(model, torch.zeros(2, 3, 8, 8))
    w = (8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 5 + 5) * F32
    x, a, m = 2 * 3 * 64 * F32, 2 * 8 * 64 * F32, 2 * 8 * F32    # input 1,536; each 8x8x8 map 4,096; mean 64
    assert r.weights_bytes == w
    # predicted: at relu, x + y (kept for the add) + conv2's output + z; conv2's output dies there
    assert r.predicted_peak_bytes == w + x + 3 * a
    # measured: the locals y, z and s stay referenced until forward returns (conv2's output does not), so
    # at the head x + y + z + s + the mean + the head's output: 104 B more than predicted
    assert r.measured_peak_bytes == w + x + 3 * a + m + 2 * 5 * F32
    assert abs(r.ratio - 1) < 0.1
    # op workspaces (a convolution's) are the allocator's alone
    assert r.allocator_peak_bytes >= r.measured_peak_bytes
    rows = {row.name: row for row in r.rows}
    assert list(rows) == ["conv1", "conv2", "relu", "add", "mean", "head"]
    assert [rows[k].allocated_bytes for k in ("conv1", "conv2", "relu", "add", "mean")] == [a, a, a, a, m]
    assert rows["relu"].type == "relu" and rows["relu"].predicted_peak_bytes == r.predicted_peak_bytes
    assert rows["relu"].predicted_live_bytes == x + 2 * a          # conv2's output died at relu
    assert max(row.measured_peak_bytes for row in r.rows) == r.measured_peak_bytes
    assert r.peak_row().name == "relu"


def test_in_place_and_views_allocate_nothing_and_hooks_are_removed():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 2)).train()
    r = peak_memory(model, torch.zeros(4, 1, 4, 4))
    assert [row.allocated_bytes for row in r.rows] == [0, 4 * 16 * F32, 0, 4 * 2 * F32]
    assert model.training                                          # its mode is given back
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_allocator_is_left_alone_under_a_running_profiler():
    model = nn.Sequential(nn.Linear(4, 4))
    with torch.autograd.profiler.profile(use_kineto=False) as prof:
        r = peak_memory(model, torch.zeros(1, 4))
        torch.ones(3).sum()
    assert r.allocator_peak_bytes is None and r.measured_peak_bytes == r.predicted_peak_bytes
    assert any(e.name == "aten::sum" for e in prof.function_events)   # the user's profiler still ran
    assert "not recorded" in r.summary()


def test_only_cpu():
    with pytest.raises(ConfigError, match="CPU"):
        peak_memory(nn.Linear(2, 2), torch.zeros(1, 2, device="meta"))


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("batch", [1, 32])
def test_zoo_predicted_vs_measured_within_10_percent(name, batch):
    model = models.build(name)
    r = peak_memory(model, torch.zeros(batch, 1, 28, 28))
    assert abs(r.ratio - 1) <= 0.10, (name, batch, r.summary())
    assert r.weights_bytes == _weights(model) == r.resident_bytes
    assert r.predicted_last_use_peak_bytes <= r.predicted_peak_bytes
    assert r.allocator_peak_bytes >= r.measured_peak_bytes
    assert max(row.predicted_peak_bytes for row in r.rows) == r.predicted_peak_bytes
    assert r.to_dict()["predicted_over_measured"] == r.ratio and "| **peak** |" in r.to_markdown()


def test_an_input_sliced_from_a_larger_tensor_counts_only_its_own_bytes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    data = torch.randn(10_000, 16)                                   # 640 kB the pass never holds
    sliced = peak_memory(model, data[:2])
    alone = peak_memory(model, data[:2].clone())
    assert sliced.predicted_peak_bytes == alone.predicted_peak_bytes < 10_000
