"""Integer-only engine: int ops against float64 oracles, and the whole network against the
fake-quantized model (float64, so float rounding cannot flip a code) within one step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.quant import IntegerModel, QuantConfig, quantize_ptq
from deepshrink.quant.graph import fake_quants, node_kind
from deepshrink.quant.integer import Grid, conv2d_int, linear_int

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2)])
def test_conv2d_int_equals_float64_conv(stride, padding, dilation, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (2, 4, 9, 9), generator=g)
    w = torch.randint(-127, 128, (6, 4 // groups, 3, 3), generator=g)
    got = conv2d_int(x, w, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)
    want = F.conv2d(x.double(), w.double(), None, stride, padding, dilation, groups)
    assert got.dtype == torch.int64 and torch.equal(got, want.long())


def test_linear_int_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randint(-255, 256, (3, 7), generator=g), torch.randint(-127, 128, (4, 7), generator=g)
    want = torch.tensor([[sum(x[i, k].item() * w[o, k].item() for k in range(7)) for o in range(4)] for i in range(3)])
    assert torch.equal(linear_int(x, w), want)


def _codes_vs_fake_quant(gm, x):
    """Engine output codes and the fake-quantized model's (float64) output codes."""
    q, g = IntegerModel(gm).run_codes(x)
    with torch.no_grad():
        f = copy.deepcopy(gm).double()(x.double())
    return q, torch.round(f / g.scale) + g.zero_point


@pytest.mark.parametrize("model_fixture", ["tiny_convnet", "tiny_resnet"])
@pytest.mark.parametrize("cfg", [QuantConfig(), QuantConfig(per_channel=False, act_observer="minmax"),
                                 QuantConfig(weight_bits=4, act_bits=6, act_observer="mse"),
                                 QuantConfig(act_symmetric=True, weight_observer="mse")])
def test_engine_within_one_step_of_fake_quant(model_fixture, cfg, images, request):
    model = request.getfixturevalue(model_fixture)
    calib, x = images
    gm = quantize_ptq(model, calib, cfg)
    q, f = _codes_vs_fake_quant(gm, x)
    assert (q - f).abs().max() <= 1
    assert q.dtype == torch.int64


def test_every_intermediate_tensor_agrees(tiny_resnet, images):
    """Feed both models and compare the codes at every quantizer, not only the output."""
    calib, x = images
    gm = quantize_ptq(tiny_resnet, calib)
    eng = IntegerModel(gm)
    env = {}
    for node, step in zip(gm.graph.nodes, eng.steps):
        if node.op == "placeholder":
            env[node] = x
        elif node.op != "output":
            env[node] = step(env)
    g64 = copy.deepcopy(gm).double()
    seen = {}
    interp = torch.fx.Interpreter(g64)
    orig = interp.run_node
    interp.run_node = lambda n: seen.setdefault(n.name, orig(n))
    interp.run(x.double())
    mods = dict(gm.named_modules())
    checked = 0
    for node in gm.graph.nodes:
        if node_kind(node, mods) == "fq":
            m = mods[node.target]
            grid = Grid.of(getattr(m, "source", m))
            f = torch.round(seen[node.name] / grid.scale) + grid.zero_point
            assert (env[node] - f).abs().max() <= 1, node.name
            checked += 1
    assert checked == len([n for n in gm.graph.nodes if node_kind(n, mods) == "fq"]) >= 10


def test_gemmlowp_rounding_within_one_step_per_layer(tiny_convnet, images):
    calib, x = images
    gm = quantize_ptq(tiny_convnet, calib)
    q1, _ = IntegerModel(gm, rounding="gemmlowp").run_codes(x)
    q2, _ = IntegerModel(gm, rounding="single").run_codes(x)
    assert (q1 - q2).abs().max() <= 2
    with pytest.raises(ConfigError):
        IntegerModel(gm, rounding="banker")


def test_dequantized_outputs_and_accuracy_agree(tiny_convnet, images):
    calib, x = images
    gm = quantize_ptq(tiny_convnet, calib)
    out = IntegerModel(gm)(x, batch_size=7)
    with torch.no_grad():
        ref = gm(x)
    step = float(fake_quants(gm)[list(fake_quants(gm))[-1]].scale)
    assert out.shape == ref.shape and (out - ref).abs().max() <= step * 1.01


def test_unsupported_op_is_a_model_error(images):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.sigmoid(self.conv(x)).flatten(1)
    gm = quantize_ptq(Odd().eval(), images[0])
    with pytest.raises(ModelError, match="no rule|not quantized"):
        IntegerModel(gm)
