"""deepshrink.prune.schedule: AGP's cubic, iterative targets, GradualPruner inside fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.data import num_batches
from deepshrink.errors import ConfigError
from deepshrink.prune import get_masks, layer_sparsities, prunable_weights, sparsity
from deepshrink.prune.schedule import GradualPruner, agp_sparsity, iterative_sparsities
from deepshrink.train import StepInfo, TrainConfig, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300", in_features=64, num_classes=4)


# ----------------------------------------------------------------------------- AGP formula

S_I, S_F, T0, N, DT = 0.1, 0.8, 10, 5, 4


def formula(t):
    return S_F + (S_I - S_F) * (1 - (t - T0) / (N * DT)) ** 3


@pytest.mark.parametrize("t", [0, 5, 9])
def test_agp_before_start(t):
    assert agp_sparsity(t, S_I, S_F, T0, N, DT) == S_I


@pytest.mark.parametrize("k", range(N + 1))
def test_agp_at_update_steps(k):
    t = T0 + k * DT
    assert agp_sparsity(t, S_I, S_F, T0, N, DT) == pytest.approx(formula(t), abs=1e-12)


def test_agp_endpoints():
    assert agp_sparsity(T0, S_I, S_F, T0, N, DT) == pytest.approx(S_I)
    assert agp_sparsity(T0 + N * DT, S_I, S_F, T0, N, DT) == S_F
    for t in (T0 + N * DT + 1, T0 + N * DT + DT, 10_000):
        assert agp_sparsity(t, S_I, S_F, T0, N, DT) == S_F


def test_agp_held_between_updates():
    for k in range(N):
        at = agp_sparsity(T0 + k * DT, S_I, S_F, T0, N, DT)
        for j in range(1, DT):
            assert agp_sparsity(T0 + k * DT + j, S_I, S_F, T0, N, DT) == at


def test_agp_monotone():
    values = [agp_sparsity(t, S_I, S_F, T0, N, DT) for t in range(0, 60)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    steps = [b - a for a, b in zip(values, values[1:]) if b > a]
    assert all(x >= y - 1e-12 for x, y in zip(steps, steps[1:]))  # fast at first, slowly at the end


@pytest.mark.parametrize("n,dt", [(0, 1), (1, 0), (-1, 3)])
def test_agp_invalid(n, dt):
    with pytest.raises(ConfigError):
        agp_sparsity(0, 0.0, 0.5, 0, n, dt)


# ----------------------------------------------------------------------------- iterative

@pytest.mark.parametrize("s_f,rounds", [(0.9, 3), (0.5, 1), (0.75, 2), (0.95, 5), (0.0, 4)])
def test_iterative_targets(s_f, rounds):
    ss = iterative_sparsities(s_f, rounds)
    assert len(ss) == rounds
    assert ss[-1] == pytest.approx(s_f, abs=1e-12)
    survivors = [1.0] + [1.0 - s for s in ss]
    ratios = [b / a for a, b in zip(survivors, survivors[1:])]
    assert all(r == pytest.approx(ratios[0], rel=1e-9) for r in ratios)  # the same fraction each round
    assert ratios[0] == pytest.approx((1 - s_f) ** (1 / rounds), rel=1e-9)
    assert all(b >= a for a, b in zip(ss, ss[1:]))


@pytest.mark.parametrize("s_f,rounds", [(0.9, 0), (1.0, 3), (-0.1, 2)])
def test_iterative_invalid(s_f, rounds):
    with pytest.raises(ConfigError):
        iterative_sparsities(s_f, rounds)


# ----------------------------------------------------------------------------- GradualPruner

def exact_layer_targets(model, s):
    return {k: round(w.numel() * s) / w.numel() for k, w in prunable_weights(model).items()}


@pytest.mark.parametrize("final", [0.9, {"fc1.weight": 0.95, "fc2.weight": 0.6}])
def test_gradual_pruner_in_fit(final, make_dataset):
    ds = make_dataset()
    model = mlp()
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=False, progress=False, verbose=False)
    total = num_batches(len(ds.train), cfg.batch_size) * cfg.epochs  # 16 steps
    pruner = GradualPruner(model, final, t0=2, n=4, dt=3)           # last update at step 14
    assert sparsity(model) == 0.0 and get_masks(model)
    history, zero_sets = [], []

    def record(m, info):
        history.append((info.global_step, sparsity(m)))
        zero_sets.append({k: (w == 0).clone() for k, w in prunable_weights(m).items()})

    fit(model, ds, cfg, callbacks=[pruner, record])
    assert len(history) == total
    values = [s for _, s in history]
    assert all(b >= a for a, b in zip(values, values[1:]))          # never decreases
    assert values[-1] > 0.5
    for earlier, later in zip(zero_sets, zero_sets[1:]):             # a pruned weight stays pruned
        for k in earlier:
            assert not (earlier[k] & ~later[k]).any()
    # the final sparsity, exactly, at the end
    if isinstance(final, dict):
        ls = layer_sparsities(model)
        for k, s in final.items():
            n = prunable_weights(model)[k].numel()
            assert ls[k] == round(n * s) / n
        assert "fc3.weight" not in ls and "fc3.weight" not in get_masks(model)  # only the named ones
    else:
        assert layer_sparsities(model) == exact_layer_targets(model, final)
    # held between updates: the sparsity only changes at t0 + k * dt
    for (t, s), (_, prev) in zip(history[1:], history):
        if s != prev:
            assert t >= 2 and (t - 2) % 3 == 0


def test_gradual_pruner_does_not_revive_moved_weights():
    """At an AGP update, weights the optimizer just moved off zero must not re-enter the ranking."""
    net = nn.Sequential(nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1, 101, dtype=torch.float32).view(10, 10) / 100)
    pruner = GradualPruner(net, 0.5, t0=0, n=2, dt=1, include="0")  # the model's only (output) layer
    pruner(net, StepInfo(0, 0, 1, 2, 0.0))  # first update: s = 0.5 - 0.5 * (1/2)^3 = 0.4375
    mask1 = net[0].weight_mask.clone()
    assert int((~mask1).sum()) == 44
    with torch.no_grad():  # an "optimizer step" moves two pruned weights far from zero
        w = net[0].weight.view(-1)
        w[0], w[1] = 5.0, -5.0
    pruner(net, StepInfo(0, 1, 2, 2, 0.0))  # final update: s = 0.5
    mask2 = net[0].weight_mask
    assert int((~mask2).sum()) == 50
    assert not (~mask1 & mask2).any()       # every weight pruned before is still pruned
    assert (net[0].weight.view(-1)[:2] == 0).all()


def test_gradual_pruner_global_scope(make_dataset):
    ds = make_dataset()
    model = mlp()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, augment=False, progress=False, verbose=False)
    pruner = GradualPruner(model, 0.8, t0=0, n=3, dt=1, scope="global")
    fit(model, ds, cfg, callbacks=[pruner])
    n_total = sum(w.numel() for w in prunable_weights(model).values())
    assert sparsity(model) == round(n_total * 0.8) / n_total


def test_gradual_pruner_invalid():
    with pytest.raises(ConfigError):
        GradualPruner(mlp(), 0.5, t0=0, n=0, dt=1)
