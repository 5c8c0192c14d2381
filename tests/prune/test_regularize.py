"""deepshrink.prune.regularize: L1/L2 penalties, Han's dropout adjustment, dead-neuron removal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.prune import get_masks, prune_, sparsity
from deepshrink.masks import apply_masks, set_mask
from deepshrink.prune.regularize import adjust_dropout, penalized_loss, penalty, remove_dead_neurons


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300", in_features=64, num_classes=4)


# ----------------------------------------------------------------------------- penalties

def brute_force(model, p, skip=("fc3.weight",)):
    total = 0.0
    for name, param in model.named_parameters():
        # biases are not penalised, nor the output layer (fc3), which is no pruning target
        if name.endswith("weight") and param.dim() >= 2 and name not in skip:
            total += sum(abs(v) ** p for v in param.detach().double().flatten().tolist())
    return total


@pytest.mark.parametrize("kind,p", [("l1", 1), ("l2", 2)])
def test_penalty_values(kind, p):
    model = mlp()
    value = penalty(model, kind)
    assert value.requires_grad
    assert value.item() == pytest.approx(brute_force(model, p), rel=1e-5)
    prune_(model, 0.5, include="fc3")  # masked: over what was pruned, the output layer included
    assert penalty(model, kind).item() == pytest.approx(brute_force(model, p, skip=()), rel=1e-5)


def test_penalty_gradient_l1_is_sign():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-0.1, 3.0, -4.0]]))
    penalty(net, "l1").backward()
    assert torch.equal(net[0].weight.grad, torch.sign(net[0].weight.detach()))
    assert net[0].bias.grad is None
    assert net[1].weight.grad is None  # the output layer is no pruning target


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_penalized_loss_adds_lambda_penalty(kind):
    model = mlp()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    logits = model(x)
    lam = 1e-3
    loss = penalized_loss(kind, lam)(model, logits, x, y)
    expected = F.cross_entropy(logits, y) + lam * penalty(model, kind)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert penalized_loss(kind, 0.0)(model, logits, x, y).item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_penalty_bad_kind():
    with pytest.raises(ConfigError, match="l3"):
        penalty(mlp(), "l3")
    with pytest.raises(ConfigError):
        penalized_loss("l3", 1e-5)
    with pytest.raises(ConfigError):
        penalized_loss("l1", -1.0)


# ----------------------------------------------------------------------------- dropout

def test_adjust_dropout_lenet300():
    torch.manual_seed(0)
    model = models.build("lenet300")
    assert model.drop1.p == 0.2
    prune_(model, {"fc1.weight": 0.75})
    changes = adjust_dropout(model)
    d_o, d_r = changes["drop1"]
    assert d_o == 0.2
    assert d_r == pytest.approx(0.2 * 0.5, abs=1e-12)  # D_o * sqrt(C_r / C_o) = 0.2 * sqrt(0.25)
    assert model.drop1.p == pytest.approx(0.1, abs=1e-12)
    assert changes["drop2"] == (0.2, 0.2)  # fc2 untouched
    assert model.drop2.p == 0.2
    # from the original rates: a second call does not compound
    again = adjust_dropout(model, {"drop1": 0.2, "drop2": 0.2})
    assert again["drop1"][1] == pytest.approx(0.1, abs=1e-12)


# ----------------------------------------------------------------------------- dead neurons

def chain(seed=0, last_bias=True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3, bias=last_bias))


NO_OUT_1 = [1, 4]   # hidden layer 1: all outgoing weights zero
NO_IN_1 = [2, 7]    # hidden layer 1: all incoming weights zero (bias nonzero: a constant unit)
BOTH_1 = [9]        # both
NO_OUT_2 = [0]
NO_IN_2 = [5, 6]


def kill_units(net: nn.Sequential) -> None:
    with torch.no_grad():
        for j in NO_OUT_1 + BOTH_1:
            net[2].weight[:, j] = 0
        for j in NO_IN_1 + BOTH_1:
            net[0].weight[j, :] = 0
        net[0].bias[2], net[0].bias[7] = 0.7, -0.3  # relu(-0.3) = 0: one constant is zero
        for j in NO_OUT_2:
            net[4].weight[:, j] = 0
        for j in NO_IN_2:
            net[2].weight[j, :] = 0
        net[2].bias[5], net[2].bias[6] = 0.4, 1.1


def test_remove_dead_neurons_shrinks_and_keeps_outputs():
    net = chain()
    kill_units(net)
    net.eval()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    before = net(x)
    removed = remove_dead_neurons(net)
    assert removed == {"0": len(NO_OUT_1 + NO_IN_1 + BOTH_1), "2": len(NO_OUT_2 + NO_IN_2)}
    assert net[0].weight.shape == (5, 6) and net[0].bias.shape == (5,)
    assert net[2].weight.shape == (5, 5) and net[2].bias.shape == (5,)
    assert net[4].weight.shape == (3, 5)
    assert (net[0].out_features, net[2].in_features, net[2].out_features, net[4].in_features) == (5, 5, 5, 5)
    assert torch.allclose(net(x), before, atol=1e-6)
    assert remove_dead_neurons(net) == {}  # nothing left to remove


def test_remove_dead_neurons_masks_shrink():
    net = chain()
    kill_units(net)
    prune_(net, 0.2, include="4")  # the output layer too
    for name in ("0.weight", "2.weight", "4.weight"):  # masks agree with the dead rows/columns
        set_mask(net, name, get_masks(net)[name] & (net.get_submodule(name[0]).weight != 0))
    net.eval()
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(2))
    before = net(x)
    s_before = sparsity(net)
    remove_dead_neurons(net)
    masks = get_masks(net)
    for name, mask in masks.items():
        w = net.get_submodule(name[0]).weight
        assert mask.shape == w.shape and mask.dtype == torch.bool
        assert (w[~mask] == 0).all()
    assert sparsity(net) < s_before  # the all-zero rows and columns are gone
    apply_masks(net)
    assert torch.allclose(net(x), before, atol=1e-6)


def test_remove_dead_neurons_without_bias_to_fold():
    net = chain(last_bias=False)
    with torch.no_grad():
        net[4].weight[:, 3] = 0     # no output: removable
        net[2].weight[1, :] = 0     # no input, constant relu(b) = b: no bias downstream to fold into
        net[2].bias[1] = 0.9
    net.eval()
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    before = net(x)
    assert remove_dead_neurons(net) == {"2": 1}
    assert net[2].out_features == 7 and net[4].in_features == 7
    assert torch.allclose(net(x), before, atol=1e-6)


def test_remove_dead_neurons_lenet300_keeps_mode():
    model = mlp()
    with torch.no_grad():
        model.fc1.weight[:30] = 0
        model.fc3.weight[:, :10] = 0
    model.eval()
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    before = model(x)
    model.train()
    assert remove_dead_neurons(model) == {"fc1": 30, "fc2": 10}
    assert model.training and model.drop1.training and model.drop2.training  # modes untouched
    model.eval()
    assert torch.allclose(model(x), before, atol=1e-6)
    assert model.fc1.out_features == 270 and model.fc2.in_features == 270
    assert model.fc2.out_features == 90 and model.fc3.in_features == 90
