"""The adaptive learning rate against its formula: g <- eta * sqrt(k) * g / ||g||_2
(Chen et al. 2020, eq. 12; homework 1-7), in the layer's backward and as gradient hooks."""

from __future__ import annotations

import math

import pytest
import torch

from deepshrink.nn import AdderConv2d, AdderLinear, adaptive_lr_hooks
from deepshrink.nn.adaptive import adaptive_scale

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scale_formula():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)   # ||g|| = 5, k = 4
    out = adaptive_scale(g, 0.1)
    torch.testing.assert_close(out, g * (0.1 * math.sqrt(4) / 5.0))
    assert float(torch.linalg.vector_norm(out)) == pytest.approx(0.1 * 2.0)


def test_zero_gradient_stays_zero():
    assert torch.equal(adaptive_scale(torch.zeros(3, 3), 0.2), torch.zeros(3, 3))


@pytest.mark.parametrize("make", [lambda eta: AdderConv2d(3, 4, 3, padding=1, eta=eta),
                                  lambda eta: AdderLinear(12, 5, eta=eta)])
def test_layer_eta_scales_only_the_weight_gradient(make):
    torch.manual_seed(0)
    plain, scaled = make(None).double(), make(0.15).double()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) if isinstance(plain, AdderConv2d) \
        else torch.randn(4, 12, dtype=torch.float64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    for m, xi in zip((plain, scaled), xs):
        (m(xi) ** 2).sum().backward()
    k = plain.weight.numel()
    g = plain.weight.grad
    torch.testing.assert_close(scaled.weight.grad, 0.15 * math.sqrt(k) * g / torch.linalg.vector_norm(g))
    torch.testing.assert_close(scaled.bias.grad, plain.bias.grad)      # bias untouched
    torch.testing.assert_close(xs[1].grad, xs[0].grad)                 # input gradient untouched


def test_hooks_match_formula_and_see_the_summed_gradient():
    torch.manual_seed(1)
    lin = torch.nn.Linear(6, 3, bias=False).double()
    x1, x2 = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)

    def loss():  # the weight is used twice: the hook must scale the sum, not each part
        return (lin(x1).tanh().sum() + (lin(x2) ** 2).sum())

    loss().backward()
    raw = lin.weight.grad.clone()
    lin.weight.grad = None
    handles = adaptive_lr_hooks([lin.weight], eta=0.2)
    loss().backward()
    torch.testing.assert_close(lin.weight.grad, adaptive_scale(raw, 0.2))
    for h in handles:
        h.remove()
    lin.weight.grad = None
    loss().backward()
    torch.testing.assert_close(lin.weight.grad, raw)
