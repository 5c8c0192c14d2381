"""The closed forms of formulas.py against profile_model on real nn.Conv2d layers.

Homework (seeds 000/001) problem 3: input and output H x W x C, stride 1, "same" padding;
memory accesses = 2 reads per MAC (input, weight) + 1 write per output, bias reads not counted.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from deepshrink.profile import profile_model
from deepshrink.profile.formulas import depthwise, inverted_bottleneck, pointwise, regular, separable_fused

HW = ["5x5", "8x8", "5x8"]              # H x W
CS = [3, 8, 16]
KS = [1, 3, 5]
TS = [2, 4, 6]
BIAS = [True, False]


def _measure(model: nn.Module, C: int, H: int, W: int):
    torch.manual_seed(0)
    prof = profile_model(model, torch.randn(1, C, H, W))
    t = prof.totals
    return prof, t["macs"], t["params"], t["memory_reads"] + t["memory_writes"]


def _same(cin, cout, k, groups=1, bias=True):
    return nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, groups=groups, bias=bias)


@pytest.mark.parametrize("hw,C,k", list(itertools.product(HW, CS, KS)))
def test_regular(hw, C, k):
    for bias in BIAS:
        H, W = map(int, hw.split("x"))
        _, macs, params, mem = _measure(_same(C, C, k, bias=bias), C, H, W)
        f = regular(H, W, C, k, bias=bias)
        assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)
        # the homework's table, written out
        assert f.macs == H * W * k**2 * C**2
        assert f.memory_accesses == 2 * H * W * k**2 * C**2 + H * W * C
        assert f.params == k**2 * C**2 + (C if bias else 0)


@pytest.mark.parametrize("hw,C,c_out,k", [(hw, C, co, k) for hw in HW for C in CS for co in (4, 12) for k in KS])
def test_regular_c_out(hw, C, c_out, k):
    H, W = map(int, hw.split("x"))
    _, macs, params, mem = _measure(_same(C, c_out, k), C, H, W)
    f = regular(H, W, C, k, c_out=c_out)
    assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)


@pytest.mark.parametrize("hw,C,k", list(itertools.product(HW, CS, KS)))
def test_depthwise(hw, C, k):
    for bias in BIAS:
        H, W = map(int, hw.split("x"))
        _, macs, params, mem = _measure(_same(C, C, k, groups=C, bias=bias), C, H, W)
        f = depthwise(H, W, C, k, bias=bias)
        assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)
        assert f.macs == H * W * k**2 * C
        assert f.memory_accesses == 2 * H * W * k**2 * C + H * W * C
        assert f.params == k**2 * C + (C if bias else 0)


@pytest.mark.parametrize("hw,C,c_out", list(itertools.product(HW, CS, [None, 5, 24])))
def test_pointwise(hw, C, c_out):
    for bias in BIAS:
        H, W = map(int, hw.split("x"))
        co = C if c_out is None else c_out
        _, macs, params, mem = _measure(_same(C, co, 1, bias=bias), C, H, W)
        f = pointwise(H, W, C, c_out, bias=bias)
        assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)
        assert f.macs == H * W * C * co


@pytest.mark.parametrize("hw,C,k", list(itertools.product(HW, CS, KS)))
def test_separable_fused(hw, C, k):
    for bias in BIAS:
        H, W = map(int, hw.split("x"))
        model = nn.Sequential(_same(C, C, k, groups=C, bias=bias), _same(C, C, 1, bias=bias))
        prof, macs, params, mem = _measure(model, C, H, W)
        f = separable_fused(H, W, C, k, bias=bias)
        dw, pw = prof.rows
        assert dw.memory_writes == H * W * C   # the intermediate tensor a fused kernel never writes
        assert (macs, params, mem - H * W * C) == (f.macs, f.params, f.memory_accesses)
        assert f.params == C * (k**2 + C + (2 if bias else 0))
        assert f.memory_accesses == 2 * H * W * C * (k**2 + C) + H * W * C


def _inverted(C, k, t, bias):
    return nn.Sequential(_same(C, t * C, 1, bias=bias),                 # expand
                         _same(t * C, t * C, k, groups=t * C, bias=bias),  # depthwise
                         _same(t * C, C, 1, bias=bias))                 # project


@pytest.mark.parametrize("hw,C,k,t", list(itertools.product(HW, CS, [1, 3, 5], TS)))
def test_inverted_bottleneck(hw, C, k, t):
    for bias in BIAS:
        H, W = map(int, hw.split("x"))
        _, macs, params, mem = _measure(_inverted(C, k, t, bias), C, H, W)
        f = inverted_bottleneck(H, W, C, k, t, bias=bias)
        assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)
        # the closed forms of the module docstring
        assert f.macs == H * W * t * C * (2 * C + k**2)
        assert f.memory_accesses == (4 * t * H * W * C**2 + 2 * t * k**2 * H * W * C
                                     + 2 * t * H * W * C + H * W * C)


@pytest.mark.parametrize("H,W,C", [(5, 5, 3), (8, 8, 16), (5, 8, 8), (14, 14, 32)])
def test_homework_inverted_bottleneck_t4_k3(H, W, C):
    f = inverted_bottleneck(H, W, C, 3, 4)
    assert f.macs == 8 * H * W * C**2 + 36 * H * W * C
    assert f.memory_accesses == 16 * H * W * C**2 + 81 * H * W * C
    # expand 4C^2 + 4C, depthwise 9*4C + 4C, project 4C^2 + C
    assert f.params == 8 * C**2 + 45 * C
    _, macs, params, mem = _measure(_inverted(C, 3, 4, True), C, H, W)
    assert (macs, params, mem) == (f.macs, f.params, f.memory_accesses)


def test_separable_beats_regular_for_wide_layers():
    # the homework's 3-2 argument, as numbers: separable is cheaper in all three metrics
    H, W, C, k = 14, 14, 32, 3
    reg, sep = regular(H, W, C, k), separable_fused(H, W, C, k)
    assert sep.macs < reg.macs and sep.params < reg.params and sep.memory_accesses < reg.memory_accesses
    assert reg.macs / sep.macs == pytest.approx(k**2 * C / (k**2 + C))


@pytest.mark.parametrize("hw,C,k,t", [("5x8", 8, 3, 4), ("8x8", 3, 5, 6), ("5x5", 16, 1, 2)])
def test_minimal_traffic_column(hw, C, k, t):
    # the second memory column: each layer reads its input and parameters once, writes its output
    H, W = map(int, hw.split("x"))
    prof, _, params, _ = _measure(_same(C, C, k), C, H, W)
    assert prof.totals["min_memory_accesses"] == 2 * H * W * C + params
    prof, _, params, _ = _measure(_inverted(C, k, t, True), C, H, W)
    assert params == 2 * t * C**2 + k**2 * t * C + 2 * t * C + C
    # block input + output, plus the two tC-channel intermediates, each written once and read once
    assert prof.totals["min_memory_accesses"] == 2 * H * W * C + 4 * t * H * W * C + params
