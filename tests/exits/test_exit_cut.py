"""Exit heads after channel pruning (:mod:`deepshrink.exits.cut`): a head's input loses exactly the
channels its layer lost. Oracle: channels whose filters and BatchNorm are zero contribute nothing,
so removing them must leave every head's logits unchanged."""

from __future__ import annotations

import torch
from torch import nn

from deepshrink.exit_heads import ExitPlan, HeadSpec, attach_heads
from deepshrink.exits.cut import cut_heads, run_order, tap_channels
from deepshrink.exits.taps import layer_outputs
from deepshrink.prune import prune_channels

ZEROED = {"conv1": [1, 5], "conv2": [2, 6]}


class Plain(nn.Module):
    """Two conv blocks and a classifier, defined here (not in the zoo)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _model() -> Plain:
    torch.manual_seed(0)
    m = Plain()
    with torch.no_grad():
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            idx = ZEROED[conv]
            getattr(m, conv).weight[idx] = 0
            getattr(m, conv).bias[idx] = 0
            getattr(m, bn).weight[idx] = 0
            getattr(m, bn).bias[idx] = 0
            getattr(m, bn).running_mean.uniform_(-0.5, 0.5)
    plan = ExitPlan([HeadSpec("relu1", [8, 8, 8], 4, depth=1, width=6), HeadSpec("relu2", [8, 8, 8], 4, depth=0)])
    attach_heads(m, plan)
    return m.eval()


def _head_logits(m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    feats, _ = layer_outputs(m, x, ["relu1", "relu2"])
    with torch.no_grad():
        return [head(f) for head, f in zip(m.exit_heads, feats)]


def test_zeroed_channels_removed_leave_every_heads_logits_unchanged():
    m = _model()
    x = torch.randn(5, 1, 8, 8)
    before = _head_logits(m, x)
    order = run_order(m, x[:1])
    assert order.index("bn1") < order.index("relu1") < order.index("conv2")
    result = prune_channels(m, x[:1], ratio=0.25, criterion="l1", inplace=True)
    removed = {k: sorted(set(range(8)) - set(v["out"])) for k, v in result.plan.layers.items() if "out" in v}
    assert removed["conv1"] == ZEROED["conv1"] and removed["conv2"] == ZEROED["conv2"]
    assert tap_channels(m, order, "relu1", result.plan) == result.plan.layers["bn1"]["out"]
    cuts, unmatched = cut_heads(m, ["relu1", "relu2"], order, result.plan, x[:1])
    assert unmatched == []
    assert set(cuts.layers) == {"exit_heads.0.0", "exit_heads.1.2"}      # the first conv; the linear after pooling
    assert m.exit_heads[0][0].in_channels == 6 and m.exit_heads[1][2].in_features == 6
    for a, b in zip(before, _head_logits(m, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_head_whose_input_cannot_be_told_is_reported_not_cut():
    m = _model()
    x = torch.randn(2, 1, 8, 8)
    result = prune_channels(m, x[:1], ratio=0.25, criterion="l1", inplace=True)
    cuts, unmatched = cut_heads(m, ["relu1", "relu2"], [], result.plan, x[:1])    # no run order known
    assert unmatched == ["relu1", "relu2"] and not cuts.layers
    assert m.exit_heads[0][0].in_channels == 8


def test_a_layer_nothing_cut_needs_no_head_cut():
    m = _model()
    x = torch.randn(2, 1, 8, 8)
    order = run_order(m, x[:1])
    result = prune_channels(m, x[:1], ratio={"conv2": 0.25}, criterion="l1", inplace=True)
    cuts, unmatched = cut_heads(m, ["relu1", "relu2"], order, result.plan, x[:1])
    assert unmatched == [] and set(cuts.layers) == {"exit_heads.1.2"}
    assert m.exit_heads[0][0].in_channels == 8
