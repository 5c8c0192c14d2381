"""deepshrink.prune.finetune: prune_and_finetune under each schedule on a tiny problem."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.data import Dataset
from deepshrink.errors import ConfigError
from deepshrink.prune import (SCHEDULES, PruneConfig, get_masks, layer_sparsities, prunable_weights,
                              prune_and_finetune, sparsity)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ds(make_dataset) -> Dataset:
    return make_dataset()


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300", in_features=64, num_classes=4, dropout=0.2)


def cfg(**kw) -> PruneConfig:
    base = dict(sparsity=0.9, scope="layer", distill=False, epochs=2, batch_size=32, lr=0.1, augment=False,
                progress=False, verbose=False)
    return PruneConfig(**{**base, **kw})


def check_exact(model, target):
    weights = prunable_weights(model)
    ls = layer_sparsities(model)
    for name, w in weights.items():
        s = target[name] if isinstance(target, dict) else target
        assert int((w == 0).sum()) == round(w.numel() * s), name
        assert ls[name] == pytest.approx(round(w.numel() * s) / w.numel(), abs=1e-12)
    n_total = sum(w.numel() for w in weights.values())
    if not isinstance(target, dict):
        assert abs(sparsity(model) - target) <= 0.5 * len(weights) / n_total


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_prune_and_finetune_schedules(ds, schedule):
    model = mlp()
    result = prune_and_finetune(model, ds, cfg(schedule=schedule, rounds=2, adjust_dropout=True))
    check_exact(model, 0.9)
    assert result.sparsity == sparsity(model)
    assert result.layers == layer_sparsities(model)
    assert 0.0 <= result.accuracy_before <= 1.0 and 0.0 <= result.accuracy_after <= 1.0
    if schedule == "agp":
        assert result.accuracy_pruned is None
        assert len(result.fits) == 1
    else:
        assert 0.0 <= result.accuracy_pruned <= 1.0
        assert len(result.fits) == (2 if schedule == "iterative" else 1)
    assert all(f.accuracy is not None for f in result.fits)
    assert set(result.dropout) == {"drop1", "drop2"}
    for name, (d_o, d_r) in result.dropout.items():
        assert d_o == 0.2 and d_r == pytest.approx(0.2 * (1 - result.layers[name.replace("drop", "fc") + ".weight"]) ** 0.5)
    assert result.dead_removed == {}
    # masks held: every zero is a masked position
    masks = get_masks(model)
    assert set(masks) == set(prunable_weights(model))
    for name, w in prunable_weights(model).items():
        assert torch.equal(w != 0, masks[name])
    json.dumps(result.to_dict())


def test_global_scope_oneshot_exact(ds):
    model = mlp()
    result = prune_and_finetune(model, ds, cfg(schedule="oneshot", scope="global", sparsity=0.8, epochs=1))
    n_total = sum(w.numel() for w in prunable_weights(model).values())
    assert result.sparsity == round(n_total * 0.8) / n_total


def test_per_layer_targets_agp(ds):
    model = mlp()
    target = {"fc1.weight": 0.95, "fc2.weight": 0.7, "fc3.weight": 0.3}
    prune_and_finetune(model, ds, cfg(schedule="agp", sparsity=target))
    check_exact(model, target)


def test_zero_epochs_is_oneshot(ds):
    model = mlp()
    result = prune_and_finetune(model, ds, cfg(schedule="agp", epochs=0, sparsity=0.5))
    check_exact(model, 0.5)
    assert result.fits == [] and result.accuracy_pruned is not None


def test_penalty_and_remove_dead(ds):
    model = mlp()
    with torch.no_grad():
        model.fc3.weight[:, :20] = 0  # 20 fc2 units with no output connection
    # fc3 included: its zeroed columns are then masked, so fine-tuning cannot revive them
    result = prune_and_finetune(model, ds, cfg(schedule="oneshot", sparsity=0.5, epochs=1, penalty="l1",
                                               penalty_lambda=1e-4, remove_dead=True, include=("fc3",)))
    assert result.dead_removed.get("fc2", 0) >= 20
    assert model.fc2.out_features == 100 - result.dead_removed["fc2"]
    assert model.fc3.weight.shape[1] == model.fc2.out_features
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("kw", [dict(schedule="cyclic"), dict(epochs=-1), dict(rule="l0"), dict(sparsity=1.2)])
def test_bad_config(ds, kw):
    with pytest.raises(ConfigError):
        prune_and_finetune(mlp(), ds, cfg(**kw))


def test_dropout_left_alone_by_default(ds):
    model = mlp()
    result = prune_and_finetune(model, ds, cfg(schedule="oneshot"))
    assert result.dropout == {}
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_agp_dropout_adjustment_is_seen_during_training(ds, monkeypatch):
    import deepshrink.prune.finetune as finetune

    seen, real_fit = [], finetune.fit

    def recording_fit(model, data, config, callbacks=(), loss_fn=None):
        record = lambda m, info: seen.append(m.drop1.p)  # noqa: E731 - after the other callbacks
        return real_fit(model, data, config, callbacks=[*callbacks, record], loss_fn=loss_fn)

    monkeypatch.setattr(finetune, "fit", recording_fit)
    model = mlp()
    prune_and_finetune(model, ds, cfg(schedule="agp", adjust_dropout=True))
    assert seen[0] == pytest.approx(0.2, abs=0.02)           # first update: little pruned yet
    assert min(seen[:-1]) < 0.2 * 0.5                          # lowered while training, not after
    assert seen == sorted(seen, reverse=True)                  # follows the rising sparsity


def test_unset_scope_and_distillation_resolve_by_rule_and_data(ds):
    """Global scope for one target of a data-free rule, per layer otherwise; self-distillation on
    labelled data unless a penalty is asked for; an explicit choice always wins."""
    from deepshrink.prune.finetune import resolve_rule
    plain = PruneConfig(sparsity=0.9)
    r = resolve_rule(plain, ds)
    assert (r.scope, r.distill, r.kd_temperature, r.kd_alpha) == ("global", True, 2.0, 0.5)
    assert resolve_rule(PruneConfig(sparsity={"fc1.weight": 0.5}), ds).scope == "layer"
    assert resolve_rule(PruneConfig(threshold_std=1.0), ds).scope == "layer"
    assert resolve_rule(PruneConfig(rule="reconstruct", schedule="oneshot"), ds).scope == "layer"
    assert resolve_rule(PruneConfig(penalty="l1"), ds).distill is False
    assert resolve_rule(PruneConfig(scope="layer", distill=False), ds).scope == "layer"
    text = Dataset("t", ds.train, ds.test, [0.0], [1.0], 4, labelled=False)
    assert resolve_rule(PruneConfig(rule="magnitude"), text).distill is False
    with pytest.raises(ConfigError, match="scope"):
        resolve_rule(PruneConfig(scope="net"), ds)
