"""Dependency groups from torch.fx: residual adds, concatenations, depthwise, flatten, refusals."""

import pytest
import torch
from torch import nn

from deepshrink.errors import ModelError
from deepshrink.models import build
from deepshrink.prune.graph import build_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def members(group):
    return {(m.module, m.dim, m.offset, m.block) for m in group.members}


def group_of(groups, module, dim="out"):
    found = [g for g in groups if any(m.module == module and m.dim == dim for m in g.members)]
    assert len(found) == 1, (module, dim, found)
    return found[0]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x + y, 1), 1))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):  # (N, 1, 8, 8)
        x = self.bn(torch.cat([self.a(x), self.b(x)], dim=1)).relu()
        x = nn.functional.max_pool2d(self.c(x), 2)          # (N, 5, 4, 4)
        return self.fc(x.view(x.size(0), -1))


def test_residual_add_couples_both_sides_and_the_readers():
    gs = build_groups(Residual(), torch.randn(2, 1, 8, 8))
    g = group_of(gs, "stem")
    assert members(g) == {("stem", "out", 0, 1), ("bn0", "out", 0, 1), ("c1", "in", 0, 1),
                          ("c2", "out", 0, 1), ("b2", "out", 0, 1), ("fc", "in", 0, 1)}
    assert g.prunable and g.size == 8
    inner = group_of(gs, "c1")
    assert members(inner) == {("c1", "out", 0, 1), ("b1", "out", 0, 1), ("c2", "in", 0, 1)}
    assert "output" in group_of(gs, "fc").frozen
    assert "input" in group_of(gs, "stem", "in").frozen


def test_concatenation_gives_offsets_and_flatten_gives_blocks():
    gs = build_groups(Concat(), torch.randn(2, 1, 8, 8))
    assert members(group_of(gs, "a")) == {("a", "out", 0, 1), ("bn", "out", 0, 1), ("c", "in", 0, 1)}
    assert members(group_of(gs, "b")) == {("b", "out", 0, 1), ("bn", "out", 4, 1), ("c", "in", 4, 1)}
    assert members(group_of(gs, "c")) == {("c", "out", 0, 1), ("fc", "in", 0, 16)}


def test_depthwise_convolution_follows_its_input_channels():
    net = nn.Sequential(nn.Conv2d(1, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 25, 2))
    gs = build_groups(net, torch.randn(1, 1, 5, 5))
    assert members(group_of(gs, "0")) == {("0", "out", 0, 1), ("1", "out", 0, 1), ("2", "out", 0, 1),
                                          ("3", "out", 0, 1), ("4", "in", 0, 1)}
    assert members(group_of(gs, "4")) == {("4", "out", 0, 1), ("6", "in", 0, 25)}


def test_zoo_groups():
    gs = build_groups(build("resnet20"), torch.randn(1, 1, 28, 28))
    shortcut = group_of(gs, "layer2.0.shortcut.0")
    names = {m.module for m in shortcut.members}
    assert {"layer2.0.conv2", "layer2.0.bn2", "layer2.1.conv2", "layer2.2.conv2", "layer3.0.conv1",
            "layer3.0.shortcut.0"} <= names
    assert sum(g.prunable for g in gs) == 12   # stem/stage1 + 3 stages x (1 residual) + 9 inner
    vgg = build_groups(build("vgg"), torch.randn(1, 1, 28, 28))
    assert ("classifier.0", "in", 0, 9) in members(group_of(vgg, "features.17"))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x
        return -x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(1, 4, 3), Gate()

    def forward(self, x):
        return self.gate(self.conv(x))


def test_untraceable_model_is_a_model_error_naming_the_module_and_node():
    with pytest.raises(ModelError, match=r"'gate' \(Gate\), at node 'gt'"):
        build_groups(Untraceable(), torch.randn(1, 1, 6, 6))


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(8 * 9, 2)

    def forward(self, x):  # (N, 1, 3, 3)
        y = self.b(self.a(x))
        z = self.c(y[:, :4])                      # slicing channels: not understood
        return self.fc(y.view(-1, 72)) + z.mean()  # 72 written into the code


def test_unknown_ops_and_hard_coded_views_freeze_rather_than_cut():
    gs = build_groups(Odd(), torch.randn(2, 1, 3, 3))
    assert group_of(gs, "a").prunable                       # only read by b
    frozen = group_of(gs, "b").frozen
    assert frozen is not None and "getitem" in frozen
    assert not group_of(gs, "c").prunable


def test_example_input_that_does_not_fit_is_a_model_error():
    with pytest.raises(ModelError, match="example input"):
        build_groups(build("lenet5"), torch.randn(1, 3, 28, 28))


class ChannelMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 1), nn.Linear(16, 2)

    def forward(self, x):  # (N, 1, 4, 4): the mean over channels is (N, 4, 4), same leading sizes
        return self.fc(x.mean((2, 3), keepdim=True).flatten(1).sum() + self.conv(x).mean(1).flatten(1))


def test_a_reduction_over_channels_is_not_a_pass_through():
    gs = build_groups(ChannelMean(), torch.randn(2, 1, 4, 4))
    assert not group_of(gs, "conv").prunable


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)
        self.bn, self.c = nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):  # one BatchNorm and one conv applied to two branches
        return self.c(self.bn(self.a(x))) + self.c(self.bn(self.b(x)))


def test_a_layer_used_twice_couples_its_inputs():
    gs = build_groups(Shared(), torch.randn(1, 1, 3, 3))
    assert group_of(gs, "a") is group_of(gs, "b")
    assert members(group_of(gs, "a")) == {("a", "out", 0, 1), ("b", "out", 0, 1), ("bn", "out", 0, 1),
                                          ("c", "in", 0, 1)}
