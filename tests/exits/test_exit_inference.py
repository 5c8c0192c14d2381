"""Adaptive inference against oracles: a sample that reaches the end gets the model's own output
bit for bit, one that leaves gets its exit head's logits; batch and batch-1 agree; a batch-1 sample
that leaves stops the forward pass; later layers see only the undecided rows; the expected MACs
from the exit shares equal a brute-force count of every sample's real run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ModelError
from deepshrink.exits import (EarlyExitModel, attach_exits, check_cut, default_exit_layers, exit_shares, expected_cost,
                              layer_outputs, measure_stage_macs, path_costs, run_until)
from deepshrink.exits.policies import decision_macs
from deepshrink.exits.cost import StageCosts
from deepshrink.exit_heads import Gate
from deepshrink.profile import profile_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _ee(model, x, policy="max_softmax", thresholds=None) -> EarlyExitModel:
    torch.manual_seed(1)
    plan = attach_exits(model, x[:2], ["layer1", "layer2"], 4, depth=2)
    plan.policy = policy
    if policy == "learned":
        plan.gates = [Gate([1.0, 2.0, -1.0, 0.5], 0.1, [0.5] * 4, [0.3] * 4) for _ in plan.heads]
    with torch.no_grad():
        scores = [s for s in _scores(model, plan, x)]
    # thresholds halfway between the two middle scores: about half leave at each exit, so every path
    # is taken, and no score sits on a threshold (batch and batch-1 arithmetic differ in the last bits)
    plan.thresholds = thresholds or [float(s.sort().values[len(s) // 2 - 1:len(s) // 2 + 1].mean()) for s in scores]
    return EarlyExitModel(model, plan).eval()


def _scores(model, plan, x):
    from deepshrink.exits.policies import exit_score
    outs, _ = layer_outputs(model, x, plan.layers)
    return [exit_score(plan.policy, h(o), plan.gates[k] if plan.gates else None)
            for k, (h, o) in enumerate(zip(model.exit_heads, outs))]


@pytest.mark.parametrize("policy", ["max_softmax", "entropy", "learned"])
def test_each_sample_gets_the_logits_of_the_exit_it_left_at(fresh, tiny_data, policy):
    x = tiny_data.test.x
    ee = _ee(fresh, x, policy)
    with torch.no_grad():
        out = ee(x)
        exits = ee.last_exits
        every = ee.exit_logits(x)                         # heads and model output for every sample, one full pass
        plain = fresh(x)
    assert set(exits.tolist()) == {0, 1, 2}               # every path taken
    last = exits == 2
    assert torch.equal(out[last], plain[last])             # the oracle: exactly the original model's output
    for k in range(3):
        torch.testing.assert_close(out[exits == k], every[k][exits == k], rtol=1e-5, atol=1e-6)


def test_batch_and_batch_one_agree(fresh, tiny_data):
    x = tiny_data.test.x[:24]
    ee = _ee(fresh, x)
    with torch.no_grad():
        batch, exits = ee(x), ee.last_exits.clone()
        single = [(ee(x[i:i + 1]), int(ee.last_exits)) for i in range(len(x))]
    assert [e for _, e in single] == exits.tolist()
    torch.testing.assert_close(torch.cat([o for o, _ in single]), batch, rtol=1e-5, atol=1e-6)


def test_a_sample_that_leaves_stops_the_forward_pass(fresh, tiny_data):
    x = tiny_data.test.x
    ee = _ee(fresh, x)
    calls = []
    handles = [fresh.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: calls.append((n, a[0].shape[0])))
               for n in ("layer2", "layer3", "fc")]
    try:
        with torch.no_grad():
            ee(x)
            exits = ee.last_exits.clone()
            seen = dict(calls)
            calls.clear()
            first = int((exits == 0).nonzero()[0])
            ee(x[first:first + 1])
    finally:
        for h in handles:
            h.remove()
    assert calls == []                                     # batch 1, left at exit 0: nothing after layer1 ran
    assert seen["layer2"] == int((exits >= 1).sum())       # a batch: later layers only on the undecided rows
    assert seen["layer3"] == seen["fc"] == int((exits == 2).sum())


def test_expected_macs_equal_a_brute_force_count(fresh, tiny_data):
    x = tiny_data.test.x[:20]
    for policy in ("max_softmax", "learned"):
        ee = _ee(fresh, x, policy)
        costs = measure_stage_macs(fresh, ee.plan.layers, list(fresh.exit_heads), x, decision_macs(policy))
        counted, exits = [], []
        for i in range(len(x)):                            # what each sample's own run really costs
            counted.append(profile_model(ee, x[i:i + 1]).totals["macs"])
            exits.append(int(ee.last_exits))
        assert set(exits) == {0, 1, 2}
        shares = exit_shares(torch.tensor(exits), 3)
        assert expected_cost(shares, path_costs(costs, ee.plan.enabled())) == pytest.approx(sum(counted) / len(x))


def test_path_costs_follow_the_formula():
    costs = StageCosts([10.0, 20.0, 30.0], [1.0, 2.0], decision=0.5)
    assert path_costs(costs, [True, True]) == [11.5, 24.0, 34.0]
    assert path_costs(costs, [False, True]) == [10.0, 22.5, 32.5]   # an exit that is off costs nothing
    assert expected_cost([0.5, 0.25, 0.25], [11.5, 24.0, 34.0]) == pytest.approx(20.25)


def test_taps_read_and_stop(fresh, tiny_data):
    x = tiny_data.test.x[:3]
    with torch.no_grad():
        f1 = run_until(fresh, x, "layer1")
        outs, final = layer_outputs(fresh, x, ["layer1", "layer2"])
        assert torch.equal(f1, outs[0]) and torch.equal(final, fresh(x))
        assert torch.equal(fresh.layer2(f1), outs[1])


def test_a_cut_that_a_skip_connection_jumps_over_is_refused(fresh, tiny_data):
    check_cut(fresh, "layer1", tiny_data.test.x[:2])       # a whole block's output: fine
    with pytest.raises(ModelError, match="layer1.0.conv1"):
        check_cut(fresh, "layer1.0.conv1", tiny_data.test.x[:2])   # the residual add reads the block's input


def test_default_exits_are_stage_ends(fresh, tiny_data):
    x = tiny_data.test.x[:1]
    assert default_exit_layers(fresh, x, max_share=1.0) == ["layer1", "layer2"]    # not the last stage, layer3
    assert default_exit_layers(fresh, x) == ["layer1"]      # layer2 ends past 80% of this tiny model's MACs


class _Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 4))

    def forward(self, x):
        return self.head(self.features(x))


def test_default_exits_take_the_pooled_map():
    torch.manual_seed(0)
    assert default_exit_layers(_Pooled().eval(), torch.randn(1, 1, 8, 8), max_share=1.0) == ["features.2",
                                                                                            "features.5"]


def test_frozen_heads_give_the_same_exits_and_logits(fresh, tiny_data):
    x = tiny_data.test.x
    ee = _ee(fresh, x)
    with torch.no_grad():
        want, exits = ee(x), ee.last_exits.clone()
        ee.freeze()
        assert all(not isinstance(m, nn.BatchNorm2d) for h in ee._frozen for m in h)
        got = ee(x)
        assert torch.equal(ee.last_exits, exits)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        single = torch.cat([ee(x[i:i + 1]) for i in range(8)])
        torch.testing.assert_close(single, want[:8], rtol=1e-5, atol=1e-5)
        ee.thaw()
        assert torch.equal(ee(x), want)
