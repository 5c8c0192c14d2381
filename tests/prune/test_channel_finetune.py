"""Iterative channel pruning with fine-tuning, and the prune-channels command."""

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune import ChannelConfig, ChannelPlan, apply_plan, prune_channels_and_finetune
from deepshrink.prune.channel_finetune import _round_data, round_budgets, within_budget
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




@pytest.mark.parametrize("epochs,rounds,expected", [
    (0, 3, [(0, 0.0)] * 3),
    (1, 3, [(1, 1 / 3)] * 3),
    (2, 3, [(1, 2 / 3)] * 3),
    (3, 3, [(1, 1.0)] * 3),
    (4, 3, [(1, 1.0), (1, 1.0), (2, 1.0)]),     # the remainder to the last, deepest cuts
    (7, 2, [(3, 1.0), (4, 1.0)]),
])
def test_round_budgets_spend_every_epoch_and_tune_every_round(epochs, rounds, expected):
    budgets = round_budgets(epochs, rounds)
    assert [e for e, _ in budgets] == [e for e, _ in expected]
    assert [share for _, share in budgets] == pytest.approx([share for _, share in expected])
    assert sum(e * share for e, share in budgets) == pytest.approx(epochs)   # the whole budget, no more


def test_the_rounds_shares_are_disjoint_parts_of_the_training_split(make_dataset):
    ds = make_dataset(n_train=90)
    ds.train.x = torch.arange(90.0).view(90, 1, 1, 1)          # each image names its own index
    parts = [_round_data(ds, 1 / 3, r, seed=0).train.x.flatten().long().tolist() for r in range(3)]
    assert [len(p) for p in parts] == [30, 30, 30]
    assert sorted(sum(parts, [])) == list(range(90))
    assert _round_data(ds, 1.0, 0, seed=0) is ds


def test_one_epoch_over_three_rounds_fine_tunes_every_round_and_says_so_first(make_dataset, capsys):
    """The issue's case (`--rounds 3 --finetune-epochs 1`): the epoch no longer all goes to round 1."""
    torch.manual_seed(0)
    ds = make_dataset()
    cfg = ChannelConfig(ratio=0.5, rounds=3, epochs=1, lr=0.05, progress=False, verbose=True)
    r = prune_channels_and_finetune(Tiny(), ds, torch.randn(1, 1, 8, 8), cfg)
    assert len(r.fits) == 3 and all("accuracy_tuned" in rec for rec in r.rounds)
    assert [rec["finetune_images"] for rec in r.rounds] == [85, 85, 85]      # round(256 / 3) each
    assert sum(rec["finetune_epochs"] for rec in r.rounds) == pytest.approx(1.0)
    out = capsys.readouterr().out.splitlines()
    announce = [i for i, line in enumerate(out) if line.startswith("round ")]
    epochs = [i for i, line in enumerate(out) if line.startswith("epoch 1/1")]
    assert len(announce) == 3 and len(epochs) == 3
    assert all(a < e for a, e in zip(announce, epochs))                       # said before it is done
    assert "round 2/3" in out[announce[1]] and "one pass over 85 of the 256 training images" in out[announce[1]]
    assert "SGD, lr 0.05" in out[announce[0]]


def test_within_budget_against_hand_computed_drops():
    assert within_budget(0.90, 0.895, 0.5) is True        # -0.5 pp: at the budget
    assert within_budget(0.90, 0.89, 0.5) is False        # -1 pp
    assert within_budget(0.90, 0.95, 0.0) is True         # a gain
    assert within_budget(0.90, 0.10, None) is None        # no budget: nothing checked
    assert within_budget(None, 0.5, 1.0) is None and within_budget(float("nan"), 0.5, 1.0) is None


@pytest.mark.parametrize("bad", [dict(max_drop=-1.0), dict(max_drop=float("nan")), dict(max_drop=float("inf")),
                                 dict(epochs=1.5), dict(rounds=0), dict(ratio=1.5)])
def test_bad_channel_configs_are_refused_before_any_work(bad):
    cfg = ChannelConfig(**{"ratio": 0.5, **bad})
    with pytest.raises(ConfigError):
        cfg.check()
