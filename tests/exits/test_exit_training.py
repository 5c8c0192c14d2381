"""Training exit heads: the loss against its formula, a frozen backbone that stays bit for bit the
same (BatchNorm statistics included) while the heads learn, cached and streamed features giving
the same heads, joint training changing the backbone, and settings refused with a ConfigError."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from deepshrink.data import Dataset
from deepshrink.errors import ConfigError
from deepshrink.exits import ExitTraining, attach_exits, exit_loss, train_heads
from deepshrink.exits.calibrate import collect_exit_logits
from deepshrink.exits.model import EarlyExitModel

pytestmark = pytest.mark.usefixtures("one_thread")


def test_exit_loss_is_the_weighted_mean_of_the_exit_losses():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(8, 4, generator=g) for _ in range(3)]
    y = torch.randint(0, 4, (8,), generator=g)
    plain = exit_loss(z[:2], z[2], y, [1.0, 3.0])
    assert plain == pytest.approx(float((F.cross_entropy(z[0], y) + 3 * F.cross_entropy(z[1], y)) / 4))
    joint = exit_loss(z[:2], z[2], y, [1.0, 1.0, 2.0])
    want = (F.cross_entropy(z[0], y) + F.cross_entropy(z[1], y) + 2 * F.cross_entropy(z[2], y)) / 4
    assert joint == pytest.approx(float(want))
    a, t = 0.5, 2.0
    kd = exit_loss(z[:1], z[2], y, [1.0], kd_alpha=a, temperature=t)
    soft = F.kl_div(F.log_softmax(z[0] / t, 1), F.softmax(z[2] / t, 1), reduction="batchmean")
    assert kd == pytest.approx(float(a * t * t * soft + (1 - a) * F.cross_entropy(z[0], y)), rel=1e-5)


def _accuracies(model, plan, data):
    logits = collect_exit_logits(EarlyExitModel(model, plan), data.test.x)
    return [(z.argmax(1) == data.test.y).float().mean().item() for z in logits]


def test_frozen_training_teaches_the_heads_and_leaves_the_backbone_alone(fresh, tiny_data):
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    plan = attach_exits(fresh, tiny_data.test.x[:2], ["layer1", "layer2"], 4, depth=1)
    untrained = _accuracies(fresh, plan, tiny_data)
    cfg = ExitTraining(epochs=6, batch_size=32, progress=False, verbose=False)
    res = train_heads(fresh, plan.layers, fresh.exit_heads, tiny_data, cfg, [tuple(h.in_shape) for h in plan.heads])
    assert res.cached and res.history[-1]["loss"] < res.history[0]["loss"]
    after = fresh.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)        # BatchNorm running stats too
    trained = _accuracies(fresh, plan, tiny_data)
    assert trained[-1] == untrained[-1]                                   # the model's own output unchanged
    assert trained[1] > untrained[1] and trained[1] > 0.5


def test_cached_and_streamed_features_train_the_same_heads(tiny_resnet, tiny_data):
    heads = []
    for cache_bytes in (1 << 30, 0):
        model = copy.deepcopy(tiny_resnet)
        torch.manual_seed(0)
        plan = attach_exits(model, tiny_data.test.x[:2], ["layer1"], 4, depth=1)
        cfg = ExitTraining(epochs=1, batch_size=64, kd_alpha=0.5, cache_bytes=cache_bytes, progress=False,
                           verbose=False)
        res = train_heads(model, plan.layers, model.exit_heads, tiny_data, cfg, [tuple(plan.heads[0].in_shape)])
        assert res.cached == (cache_bytes > 0)
        heads.append(model.exit_heads[0].state_dict())
    for k in heads[0]:        # float16 cache against float32 features: close, not equal
        torch.testing.assert_close(heads[0][k].float(), heads[1][k].float(), rtol=0.05, atol=0.05)


def test_joint_training_changes_the_backbone(fresh, tiny_data):
    ds: Dataset = tiny_data
    before = fresh.conv1.weight.clone()
    plan = attach_exits(fresh, ds.test.x[:2], ["layer1"], 4, depth=1)
    cfg = ExitTraining(mode="joint", epochs=1, batch_size=64, exit_weights=[1.0, 1.0], progress=False,
                       verbose=False)
    res = train_heads(fresh, plan.layers, fresh.exit_heads, ds, cfg, [tuple(plan.heads[0].in_shape)])
    assert res.history and not torch.equal(before, fresh.conv1.weight)
    assert not fresh.training


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "both"}, "mode"),
    ({"exit_weights": [1.0]}, "2 weights"),
    ({"exit_weights": [0.0, 0.0]}, "not all 0"),
    ({"augment": True}, "--mode joint"),
    ({"kd_alpha": 2.0}, "kd_alpha"),
    ({"batch_size": 0}, "batch size"),
])
def test_bad_settings_are_config_errors(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ExitTraining(**kwargs).check(2)
