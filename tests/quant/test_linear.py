"""Affine quantization maths: ranges, round trips, STE and LSQ gradients against the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from deepshrink.errors import ConfigError
from deepshrink.quant.linear import (QScheme, choose_qparams, dequantize, fake_quantize, lsq_fake_quantize,
                                     qrange, quantize)


def test_qrange():
    assert qrange(8, True, True) == (-127, 127)
    assert qrange(8, True, False) == (-128, 127)
    assert qrange(8, False, False) == (0, 255)
    assert qrange(4, True, True) == (-7, 7)
    assert qrange(2, False, True) == (0, 3)
    with pytest.raises(ConfigError):
        QScheme(bits=9).check()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric,signed", [(True, True), (False, False), (False, True), (True, False)])
def test_round_trip_within_half_step_and_zero_exact(bits, symmetric, signed):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(1000, generator=g) * 3 + 0.5
    sch = QScheme(bits, symmetric, signed)
    scale, zp = choose_qparams(x.min(), x.max(), sch)
    q = quantize(x, scale, zp, sch.qmin, sch.qmax)
    assert q.min() >= sch.qmin and q.max() <= sch.qmax
    err = (dequantize(q, scale, zp) - x).abs()
    assert err.max() <= scale / 2 + 1e-5             # every value inside the range
    zero = quantize(torch.zeros(1), scale, zp, sch.qmin, sch.qmax)
    assert dequantize(zero, scale, zp).item() == 0.0  # real zero is exactly representable
    if symmetric and signed:
        assert int(zp) == 0


def test_per_channel_matches_per_tensor_slices():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, 3, 3, generator=g) * torch.arange(1, 6).reshape(5, 1, 1, 1)
    sch = QScheme(4, True, True, per_channel=True)
    lo, hi = w.flatten(1).amin(1), w.flatten(1).amax(1)
    scale, zp = choose_qparams(lo, hi, sch)
    q = quantize(w, scale, zp, sch.qmin, sch.qmax, axis=0)
    for c in range(5):
        sc, zc = choose_qparams(lo[c], hi[c], QScheme(4, True, True))
        assert torch.equal(q[c], quantize(w[c], sc, zc, sch.qmin, sch.qmax))
    assert torch.allclose(fake_quantize(w, scale, zp, sch.qmin, sch.qmax, 0), dequantize(q, scale, zp, 0))


def test_ste_gradient_is_the_clipping_indicator():
    x = torch.linspace(-3, 3, 600, requires_grad=True)   # no point on a half-step boundary
    scale, zp, qmin, qmax = 0.02, 10, 0, 127    # range [-0.2, 2.34]
    y = fake_quantize(x, torch.tensor(scale), torch.tensor(zp), qmin, qmax)
    upstream = torch.randn(600, generator=torch.Generator().manual_seed(1))
    y.backward(upstream)
    # formula: dL/dx = dL/dy when q_min <= round(x/S) + Z <= q_max, else 0 (written out per element)
    expect = torch.tensor([u if qmin <= round(v / scale) + zp <= qmax else 0.0
                           for v, u in zip(x.detach().tolist(), upstream.tolist())])
    assert (x.grad == expect.float()).all()
    assert x.grad[(x > -0.1) & (x < 2.3)].ne(0).sum() == upstream[(x > -0.1) & (x < 2.3)].ne(0).sum()
    assert (x.grad[(x < -0.3) | (x > 2.5)] == 0).all()


def test_lsq_forward_and_gradients_match_formula():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(200, generator=g) * 2).requires_grad_()
    s = torch.tensor(0.3, requires_grad=True)
    qmin, qmax = -7, 7
    y = lsq_fake_quantize(x, s, 0, qmin, qmax)
    assert torch.allclose(y, fake_quantize(x.detach(), 0.3, 0, qmin, qmax))
    up = torch.randn(200, generator=g)
    y.backward(up)
    v = x.detach() / 0.3
    inside = (v >= qmin) & (v <= qmax)
    ds = torch.where(inside, torch.round(v) - v, v.clamp(qmin, qmax))   # Esser et al. eq. 3
    gscale = 1 / math.sqrt(200 * qmax)
    assert torch.allclose(s.grad, (up * ds).sum() * gscale, atol=1e-5)
    assert torch.allclose(x.grad, up * inside, atol=1e-6)   # (1/S) * S up to rounding
