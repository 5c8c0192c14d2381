"""Iterative channel pruning with fine-tuning, and the prune-channels command."""

import pytest
import torch
from torch import nn

from deepshrink.prune import ChannelConfig, ChannelPlan, apply_plan, prune_channels_and_finetune
from deepshrink.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 16, 4)

    def forward(self, x):  # (N, 1, 8, 8)
        x = torch.relu(self.b1(self.c1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)   # (N, 8, 4, 4)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("target", [dict(macs_target=0.5), dict(ratio=0.5)])
def test_rounds_reach_the_target_and_the_composed_plan_rebuilds_the_model(make_dataset, target):
    torch.manual_seed(0)
    ds = make_dataset()
    model = Tiny()
    x = torch.randn(1, 1, 8, 8)
    cfg = ChannelConfig(**target, rounds=2, epochs=2, lr=0.05, progress=False, verbose=False)
    r = prune_channels_and_finetune(model, ds, x, cfg)
    assert len(r.rounds) == 2 and len(r.fits) == 2
    if "macs_target" in target:
        assert r.macs_ratio <= 0.5
    else:
        assert model.c1.out_channels == 4          # (1 - 0.5) of 8 over two rounds
    assert r.accuracy_after == evaluate(model, ds.test) and r.accuracy_before >= 0
    fresh = apply_plan(Tiny(), ChannelPlan.from_json(r.plan.to_json()))
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(ds.test.x), model.eval()(ds.test.x))


