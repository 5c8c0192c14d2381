"""The table of a model's conv layers: each found with its real input by one forward, padding
modes and "same" padding turned into zero padding the algorithms take, and one row per
algorithm (supported or why not, error, workspace predicted and measured, time)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.convalgo import NAMES, conv2d
from deepshrink.convalgo.table import conv_inputs, conv_table, layer_args, summarize
from deepshrink.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)                    # never called: not in the table
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 5, stride=2, bias=False))

    def forward(self, x):
        return self.body(self.stem(x))


def test_conv_inputs_are_the_real_inputs_in_call_order():
    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(2, 2, 10, 10)
    found = conv_inputs(net, x)
    assert [name for name, _, _ in found] == ["stem", "body.1"]
    assert torch.equal(found[0][2], x)
    assert torch.equal(found[1][2], torch.relu(net.stem(x)).detach())
    with pytest.raises(ModelError, match="does not accept input of shape \\[2, 3, 10, 10\\]"):
        conv_inputs(net, torch.randn(2, 3, 10, 10))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    nn.Conv2d(3, 4, 3, padding=2, padding_mode="circular"),
    nn.Conv2d(3, 4, 4, padding="same"),                      # even kernel: 1 before, 2 after
    nn.Conv2d(3, 4, 3, padding="same", dilation=2),
    nn.Conv2d(3, 4, 3, padding="valid"),
])
def test_layer_args_compute_what_the_module_computes(conv):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 9)
    xin, opts, note = layer_args(conv, x)
    args = (opts["stride"], opts["padding"], opts["dilation"], opts["groups"])
    for name in ("direct", "im2col", "fft"):
        torch.testing.assert_close(conv2d(name, xin, opts["w"], opts["b"], *args), conv(x).detach(), rtol=1e-4,
                                   atol=1e-3)
    assert ("padded first" in note) == (conv.padding_mode != "zeros" or conv.kernel_size == (4, 4))


def test_one_row_per_algorithm_with_error_workspace_and_time():
    torch.manual_seed(0)
    layers = conv_table(Net().eval(), torch.randn(1, 2, 10, 10), repeats=1)
    assert [layer.name for layer in layers] == ["stem", "body.1"]
    for layer in layers:
        assert [r.algorithm for r in layer.rows] == list(NAMES)
        assert layer.reference_ms > 0 and layer.fastest() in NAMES
        for r in layer.rows:
            if not r.supported:
                assert layer.name == "body.1" and r.algorithm == "winograd" and "3x3 kernel" in r.reason
                continue
            assert r.max_abs_error < 1e-4 and r.time_ms > 0
            assert r.workspace_measured == r.workspace_predicted
        assert layer.to_dict()["output_shape"] == list(layer.shape.output_shape)
    s = summarize(layers)
    assert s["winograd"]["run"] == 1 and s["direct"]["run"] == 2 and s["direct"]["workspace_equal"] == 2
    assert sum(len(v["fastest_on"]) for v in s.values()) == 2
