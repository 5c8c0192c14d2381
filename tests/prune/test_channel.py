"""Channel pruning: equivalence when the cut channels were zero, zoo models, plans, sorting, criteria."""

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError, FormatError, ModelError
from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink.models import build
from deepshrink.prune import ChannelPlan, apply_plan, prune_channels, sort_channels
from deepshrink.prune.criteria import fpgm, get_criterion, input_frobenius, l1_norm
from deepshrink.prune.graph import build_groups
from deepshrink.masks import set_mask
from deepshrink.prune.plan import PLAN_KEY, compose_plans

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = ("resnet20", "vgg", "mobilenetv2", "lenet5", "lenet300")


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(14)
        self.c = nn.Conv2d(14, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 4 * 4, 3)

    def forward(self, x):  # (N, 1, 8, 8)
        x = self.bn(torch.cat([self.a(x), self.b(x)], dim=1)).relu()
        x = nn.functional.max_pool2d(self.c(x), 2)
        return self.fc(torch.flatten(x, 1))


def model_and_input(name):
    torch.manual_seed(0)
    if name == "concat":
        return Concat(), torch.randn(4, 1, 8, 8)
    return build(name), torch.randn(4, 1, 28, 28)


def randomize_bn(model):
    """Non-trivial BatchNorm statistics and scales, as after training."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@torch.no_grad()
def zero_channels(model, x, ratio):
    """Zero the producers (filters, biases, BatchNorm gamma/beta) of the channels ``ratio`` removes."""
    for g in build_groups(model, x):
        if not g.prunable:
            continue
        n_cut = g.size - max(1, round((1 - ratio) * g.size))
        cut = torch.randperm(g.size, generator=torch.Generator().manual_seed(g.id))[:n_cut]
        for m in g.members:
            if m.dim != "out":
                continue
            mod = g.modules[m.module]
            for t in (mod.weight, mod.bias):
                if t is not None:
                    t[m.offset + cut] = 0


@pytest.mark.parametrize("name", ZOO + ("concat",))
def test_pruning_zero_channels_leaves_the_outputs_unchanged(name):
    model, x = model_and_input(name)
    randomize_bn(model)
    zero_channels(model, x, 0.5)
    ref = model(x)
    result = prune_channels(model, x, ratio=0.5, criterion="l1")
    assert result.macs_after < result.macs_before and result.params_after < result.params_before
    out = result.model.eval()(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "lenet5", "concat"])
@pytest.mark.parametrize("criterion", ["l2", "fpgm", "bn", "random", "fro"])
def test_every_model_prunes_with_every_criterion(name, criterion):
    model, x = model_and_input(name)
    result = prune_channels(model.eval(), x, ratio=0.5, criterion=criterion, seed=3)
    assert result.model(x).shape == model(x).shape
    if criterion != "bn" or name not in ("lenet5", "lenet300"):
        assert result.macs_after < result.macs_before
    assert next(model.parameters()).shape == model_and_input(name)[0].state_dict()[
        next(iter(model.state_dict()))].shape  # the original is left whole


def test_macs_target_halves_the_macs_and_global_scope_counts_channels():
    model, x = model_and_input("resnet20")
    r = prune_channels(model, x, macs_target=0.5)
    assert 0.45 <= r.macs_ratio <= 0.5
    g = prune_channels(model, x, ratio=0.3, scope="global")
    before = sum(b for b, _ in g.channels.values())
    after = sum(a for _, a in g.channels.values())
    assert before - after == round(0.3 * before)
    assert all(a >= 1 for _, a in g.channels.values())
    per = prune_channels(model, x, ratio={"layer1.0.conv1": 0.5})
    changed = {k: v for k, v in per.channels.items() if v[0] != v[1]}
    assert changed == {"layer1.0.conv1": [16, 8]}


def test_round_to_keeps_multiples():
    model, x = model_and_input("vgg")
    r = prune_channels(model, x, ratio=0.3, round_to=8)
    assert all(a % 8 == 0 for _, a in r.channels.values())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "concat"])
def test_channel_sorting_preserves_outputs(name):
    model, x = model_and_input(name)
    randomize_bn(model)
    sorted_model, plan = sort_channels(model, x)
    assert any(idx != sorted(idx) for dims in plan.layers.values() for idx in dims.values())
    torch.testing.assert_close(sorted_model.eval()(x), model(x), atol=1e-6, rtol=1e-6)


def test_plan_json_round_trip_and_reapplication():
    model, x = model_and_input("resnet20")
    r = prune_channels(randomize_bn(model), x, ratio=0.4)
    again = ChannelPlan.from_json(r.plan.to_json())
    assert again == r.plan
    fresh = apply_plan(build("resnet20"), again)
    fresh.load_state_dict(r.model.state_dict())
    torch.testing.assert_close(fresh.eval()(x), r.model.eval()(x))


def test_save_load_round_trip_rebuilds_the_smaller_shapes(tmp_path):
    model, x = model_and_input("mobilenetv2")
    r = prune_channels(randomize_bn(model), x, ratio=0.5)
    info = ModelInfo(arch="mobilenetv2", extra={PLAN_KEY: r.plan.to_dict()})
    save_model(r.model, tmp_path / "m.safetensors", info)
    loaded, info2 = load_model(tmp_path / "m.safetensors")
    assert ChannelPlan.from_dict(info2.extra[PLAN_KEY]) == r.plan
    torch.testing.assert_close(loaded(x), r.model.eval()(x))
    assert loaded.blocks[1].block[1][0].groups == r.model.blocks[1].block[1][0].groups < 144


def test_two_plans_compose_into_one():
    model, x = model_and_input("vgg")
    first = prune_channels(model, x, ratio=0.25)
    second = prune_channels(first.model, x, ratio=0.25)
    both = compose_plans(first.plan, second.plan)
    fresh = apply_plan(build("vgg"), both)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == \
           {k: v.shape for k, v in second.model.state_dict().items()}
    direct = apply_plan(copy.deepcopy(model), both)
    torch.testing.assert_close(direct.eval()(x), second.model.eval()(x))


def test_masks_are_cut_with_their_weights():
    model, x = model_and_input("lenet5")
    set_mask(model.conv2, "weight", (torch.rand_like(model.conv2.weight) > 0.5).float())
    r = prune_channels(model, x, ratio=0.5)
    assert r.model.conv2.weight_mask.shape == r.model.conv2.weight.shape


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.b(self.a(x))


def test_criteria_against_their_formulas():
    torch.manual_seed(0)
    net, x = OneConv(), torch.randn(1, 2, 3, 3)
    g = [g for g in build_groups(net, x) if g.prunable][0]
    w_out, w_in = net.a.weight.detach(), net.b.weight.detach()
    torch.testing.assert_close(l1_norm(g), w_out.abs().sum((1, 2, 3)))
    # the lab's get_input_channel_importance: ||W[:, c]||_2 of the next layer
    torch.testing.assert_close(input_frobenius(g), torch.stack([w_in[:, c].norm() for c in range(4)]))
    brute = torch.tensor([sum((w_out[c] - w_out[j]).norm() for j in range(4)) for c in range(4)])
    torch.testing.assert_close(fpgm(g), brute)
    r1 = get_criterion("random", seed=1)(g)
    assert torch.equal(r1, get_criterion("random", seed=1)(g)) and not torch.equal(r1, get_criterion("random", 2)(g))


def test_bad_arguments_are_user_errors():
    model, x = model_and_input("lenet5")
    with pytest.raises(ConfigError):
        prune_channels(model, x)
    with pytest.raises(ConfigError):
        prune_channels(model, x, ratio=0.5, macs_target=0.5)
    with pytest.raises(ConfigError):
        prune_channels(model, x, ratio=1.0)
    with pytest.raises(ConfigError):
        prune_channels(model, x, ratio=0.5, criterion="nope")
    with pytest.raises(ModelError, match="nothere"):
        apply_plan(build("lenet5"), ChannelPlan({"nothere": {"out": [0]}}))
    with pytest.raises(ModelError, match="conv1"):
        apply_plan(build("lenet5"), ChannelPlan({"conv1": {"out": [0, 99]}}))
    with pytest.raises(FormatError):
        ChannelPlan.from_json('{"layers": {"conv1": {"out": [1, 1]}}}')
    with pytest.raises(FormatError):
        ChannelPlan.from_json("[1, 2")
