"""deepshrink.tracing: one fx entry point; an untraceable model is a ModelError naming the module."""

import pytest
import torch
from torch import fx, nn

from deepshrink.errors import ModelError
from deepshrink.prune.regularize import remove_dead_neurons
from deepshrink.quant.fold import fold_batchnorm
from deepshrink.tracing import trace, trace_with_shapes


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):  # (N, 1, 6, 6)
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x
        return -x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.body = nn.Sequential(nn.ReLU(), Gate())

    def forward(self, x):
        return self.body(self.conv(x))


class TopLevelBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y if y.mean() > 0 else -y


def test_trace_matches_the_model():
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 1, 6, 6)
    gm = trace(model)
    assert isinstance(gm, fx.GraphModule) and type(gm).__name__ == "Net"
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert targets == ["conv", "bn", "fc"]
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_untraceable_model_names_the_module_and_the_node():
    with pytest.raises(ModelError, match=r"cannot trace Untraceable with torch\.fx in module 'body\.1' \(Gate\), "
                                         r"at node 'gt'.*; so nothing is cut$"):
        trace(Untraceable(), "so nothing is cut")


def test_failure_in_the_top_level_forward_says_so():
    with pytest.raises(ModelError, match=r"TopLevelBranch with torch\.fx in its top-level forward, at node 'gt'"):
        trace(TopLevelBranch())


def test_every_caller_raises_the_same_error():
    with pytest.raises(ModelError, match=r"'body\.1' \(Gate\)"):
        fold_batchnorm(Untraceable())
    with pytest.raises(ModelError, match=r"'body\.1' \(Gate\).*dead neurons"):
        remove_dead_neurons(Untraceable())


def test_trace_with_shapes_records_every_shape_and_restores_modes():
    model = Net().train()
    model.bn.eval()
    gm = trace_with_shapes(model, torch.randn(5, 1, 6, 6))
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op != "output"}
    assert shapes == {"x": (5, 1, 6, 6), "conv": (5, 4, 4, 4), "bn": (5, 4, 4, 4), "relu": (5, 4, 4, 4),
                      "flatten": (5, 64), "fc": (5, 3)}
    assert model.training and model.conv.training and not model.bn.training
    assert int(model.bn.num_batches_tracked) == 0  # ran in eval mode: running statistics untouched


def test_trace_with_shapes_accepts_a_tuple_and_rejects_a_wrong_input():
    gm = trace_with_shapes(Net(), (torch.randn(1, 1, 6, 6),))
    assert next(iter(gm.graph.nodes)).meta["tensor_meta"].shape == (1, 1, 6, 6)
    with pytest.raises(ModelError, match=r"the example input \[\(1, 2, 6, 6\)\] does not fit Net "
                                         r"\(RuntimeError: Given groups=1, .* but got 2 channels"):
        trace_with_shapes(Net(), torch.randn(1, 2, 6, 6))
