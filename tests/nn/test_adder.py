"""AdderConv2d / AdderLinear against brute-force loops (Chen et al. 2020; homework problem 1).

Oracles, all in float64 on small shapes: the forward Y = -sum |X - W| written as a loop over
every output position and window tap; the weight gradient sum g * (X - W) and the input
gradient sum g * clamp(W - X, -1, 1) accumulated by the same loop; chunked == unchunked.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from deepshrink.errors import ConfigError, ModelError
from deepshrink.nn import AdderConv2d, AdderLinear
from deepshrink.nn.adder import adder_conv2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _pad(x, p):
    return F.pad(x, (p[1], p[1], p[0], p[0]))


def brute_conv(x, w, b, stride, padding, dilation, g=None):
    """(Y, dL/dX, dL/dW) by loops; the gradients for the upstream gradient ``g``."""
    N, C, H, W = x.shape
    S, _, kh, kw = w.shape
    xp = _pad(x, padding)
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = torch.zeros(N, S, Ho, Wo, dtype=x.dtype)
    gxp, gw = torch.zeros_like(xp), torch.zeros_like(w)
    for n, s, i, j in itertools.product(range(N), range(S), range(Ho), range(Wo)):
        for a, c in itertools.product(range(kh), range(kw)):
            r, q = i * stride[0] + a * dilation[0], j * stride[1] + c * dilation[1]
            xv, wv = xp[n, :, r, q], w[s, :, a, c]                       # (C,), (C,)
            y[n, s, i, j] -= (xv - wv).abs().sum()
            if g is not None:
                gw[s, :, a, c] += g[n, s, i, j] * (xv - wv)
                gxp[n, :, r, q] += g[n, s, i, j] * (wv - xv).clamp(-1, 1)
        if b is not None:
            y[n, s, i, j] += b[s]
    gx = gxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
    return y, gx, gw


CASES = [  # C_in, C_out, k, stride, padding, dilation, bias, H  (C_in*k*k <= 32 uses cdist, else blocks)
    (2, 3, 3, 1, 0, 1, True, 6),
    (3, 4, 3, 2, 1, 1, False, 7),
    (2, 3, (3, 2), (1, 2), (2, 1), (2, 1), True, 7),
    (5, 4, 3, 1, 1, 1, True, 5),      # K = 45: block kernel
    (4, 2, 5, 2, 2, 1, False, 8),     # K = 100
    (6, 3, 1, 2, 0, 1, True, 5),      # 1x1, strided (the ResNet shortcut)
]


@pytest.mark.parametrize("cin,cout,k,stride,padding,dilation,bias,hw", CASES)
def test_conv_forward_and_gradients_match_loops(cin, cout, k, stride, padding, dilation, bias, hw):
    torch.manual_seed(0)
    layer = AdderConv2d(cin, cout, k, stride, padding, dilation, bias=bias).double()
    if bias:
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, cin, hw, hw + 1, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    want_y, want_gx, want_gw = brute_conv(x.detach(), layer.weight.detach(), layer.bias,
                                          layer.stride, layer.padding, layer.dilation, g)
    torch.testing.assert_close(y.detach(), want_y.detach())
    torch.testing.assert_close(layer.weight.grad, want_gw)
    torch.testing.assert_close(x.grad, want_gx)
    if bias:
        torch.testing.assert_close(layer.bias.grad, g.sum((0, 2, 3)))


def test_input_gradient_is_hardtanh_not_sign():
    # one tap, one channel: Y = -|x - w|; with |w - x| < 1 the gradient is w - x, beyond it +-1
    w = torch.tensor([[[[0.0]]]], dtype=torch.float64)
    x = torch.tensor([0.3, -0.5, 2.0, -3.0], dtype=torch.float64).view(4, 1, 1, 1).requires_grad_()
    adder_conv2d(x, w).sum().backward()
    torch.testing.assert_close(x.grad.flatten(), torch.tensor([-0.3, 0.5, -1.0, 1.0], dtype=torch.float64))


def test_weight_gradient_is_full_precision_x_minus_w():
    w = torch.tensor([[0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[2.0, 1.0], [0.0, -4.0]], dtype=torch.float64)
    layer = AdderLinear(2, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, (x - w.detach()).sum(0, keepdim=True))


@pytest.mark.parametrize("chunk", [1, 7, 200, 5000])
def test_chunked_equals_unchunked(chunk):
    torch.manual_seed(1)
    big = AdderConv2d(4, 6, 3, 1, 1).double()
    small = AdderConv2d(4, 6, 3, 1, 1, chunk_elements=chunk).double()
    small.load_state_dict(big.state_dict())
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [m(xi) for m, xi in zip((big, small), xs)]
    g = torch.randn_like(outs[0])
    for o in outs:
        o.backward(g)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(xs[1].grad, xs[0].grad)
    torch.testing.assert_close(small.weight.grad, big.weight.grad)


def test_channels_last_input_and_float32():
    torch.manual_seed(2)
    layer = AdderConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    y = layer(x)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y)
    want, _, _ = brute_conv(x.double(), layer.weight.detach().double(), layer.bias.detach().double(),
                            (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-4)


def test_channels_last_weights_and_gradients():
    # fit() turns models with an nn.Conv2d (resnet20_adder's stem) to channels_last
    torch.manual_seed(5)
    a = AdderConv2d(4, 6, 3, padding=1).double()
    b = AdderConv2d(4, 6, 3, padding=1).double()
    b.load_state_dict(a.state_dict())
    b.to(memory_format=torch.channels_last)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    xa = x.clone().requires_grad_()
    xb = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    a(xa).square().sum().backward()
    b(xb).square().sum().backward()
    torch.testing.assert_close(b.weight.grad, a.weight.grad)
    torch.testing.assert_close(xb.grad, xa.grad)


def test_only_needed_gradients():
    layer = AdderConv2d(2, 3, 3)
    layer.weight.requires_grad_(False)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is None


# ----------------------------------------------------------------------------- AdderLinear

def test_linear_matches_loop_with_leading_dims():
    torch.manual_seed(3)
    layer = AdderLinear(40, 3).double()        # 40 > 32: block kernel
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 40, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 4, 3)
    g = torch.randn_like(y)
    y.backward(g)
    w, b = layer.weight.detach(), layer.bias.detach()
    xr, gr = x.detach().reshape(8, 40), g.reshape(8, 3)
    want_y = torch.stack([torch.stack([-(xr[r] - w[s]).abs().sum() + b[s] for s in range(3)]) for r in range(8)])
    want_gw = torch.stack([sum(gr[r, s] * (xr[r] - w[s]) for r in range(8)) for s in range(3)])
    want_gx = torch.stack([sum(gr[r, s] * (w[s] - xr[r]).clamp(-1, 1) for s in range(3)) for r in range(8)])
    torch.testing.assert_close(y.detach().reshape(8, 3), want_y)
    torch.testing.assert_close(layer.weight.grad, want_gw)
    torch.testing.assert_close(x.grad.reshape(8, 40), want_gx)
    torch.testing.assert_close(layer.bias.grad, gr.sum(0))


def test_linear_small_fan_in_uses_same_values():
    torch.manual_seed(4)
    layer = AdderLinear(5, 7).double()           # cdist path
    x = torch.randn(6, 5, dtype=torch.float64)
    want = -(x[:, None, :] - layer.weight.detach()[None]).abs().sum(-1) + layer.bias.detach()
    torch.testing.assert_close(layer(x).detach(), want)


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kwargs", [
    dict(groups=2), dict(padding="same"), dict(padding_mode="reflect"), dict(stride=0),
    dict(eta=-0.1), dict(kernel_size=(3, 3, 3)), dict(chunk_elements=0), dict(padding=-1),
])
def test_unsupported_arguments_raise_config_error(kwargs):
    args = dict(in_channels=4, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ConfigError):
        AdderConv2d(**args)


def test_shape_mismatches_raise_model_error():
    with pytest.raises(ModelError, match="does not fit"):
        AdderConv2d(3, 4, 3)(torch.randn(1, 2, 8, 8))
    with pytest.raises(ModelError, match="smaller than"):
        AdderConv2d(3, 4, 5)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ModelError, match="does not fit"):
        AdderLinear(5, 2)(torch.randn(3, 4))


def test_linear_refusals():
    with pytest.raises(ConfigError):
        AdderLinear(0, 3)
    with pytest.raises(ConfigError):
        AdderLinear(3, 3, eta=0)
