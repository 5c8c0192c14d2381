"""Each convolution algorithm equals ``F.conv2d`` over a seeded grid of small shapes (channels
1-8, sizes 5-12, kernels 1/3/5, stride 1/2, padding 0/1/2, dilation 1/2, groups 1/2, with and
without bias), and what an algorithm cannot compute is one documented error."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from deepshrink.convalgo import ALGORITHMS, NAMES, algorithm, conv2d, conv_shape, supports
from deepshrink.convalgo.shapes import window
from deepshrink.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

# Tolerances. direct, im2col and kn2row sum the same C/G R S products as F.conv2d in another
# order: float32 rounding of at most 200 terms of size ~1, far under rtol = atol = 1e-4.
# Winograd F(2x2, 3x3) adds and subtracts transformed values (input transform up to 4 terms,
# kernel up to 9 with factors 1/2, output up to 9), so its rounding is that of a sum of up to
# ~16 x 9 x C/G larger terms, cancelling; FFT's error on each output is proportional to the norm
# of the whole padded image and kernel (every output mixes every frequency) times eps log2(Hf Wf):
# for the largest grid shape (8 channels, 16x16 padded, 5x5) eps x 8 x ||x|| ||w|| ~ 2e-4.
# Both get atol 1e-3 (measured worst on this grid: about 2e-5).
TOLERANCE = {"direct": 1e-4, "im2col": 1e-4, "kn2row": 1e-4, "winograd": 1e-3, "fft": 1e-3}


def _grid(count: int = 64, seed: int = 0) -> list[dict]:
    """A seeded sample of the full grid (channels, size, kernel, stride, padding, dilation, groups)."""
    full = list(itertools.product((1, 3, 8), (5, 8, 12), (1, 3, 5), (1, 2), (0, 1, 2), (1, 2), (1, 2)))
    rng = random.Random(seed)
    cases = []
    for c, size, k, stride, pad, dil, groups in rng.sample(full, len(full)):
        c = min(c * groups, 8)                           # divisible by groups (1 or 2)
        h, w = size, rng.randint(5, 12)
        if h + 2 * pad < dil * (k - 1) + 1 or w + 2 * pad < dil * (k - 1) + 1:
            continue                                      # no output: F.conv2d refuses it too
        cases.append(dict(n=rng.choice((1, 2)), c=c, h=h, w=w, k=groups * rng.randint(1, 4), kernel=k,
                          stride=stride, padding=pad, dilation=dil, groups=groups, bias=rng.random() < 0.5))
        if len(cases) == count:
            break
    return cases


GRID = _grid()
WINOGRAD_GRID = [dict(case, kernel=3, stride=1, dilation=1) for case in _grid(seed=1)]


def _operands(case: dict, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=g)
    w = torch.randn(case["k"], case["c"] // case["groups"], case["kernel"], case["kernel"], generator=g)
    b = torch.randn(case["k"], generator=g) if case["bias"] else None
    return x, w, b, (case["stride"], case["padding"], case["dilation"], case["groups"])


def test_the_grid_covers_every_option():
    for key, values in (("kernel", {1, 3, 5}), ("stride", {1, 2}), ("padding", {0, 1, 2}), ("groups", {1, 2}),
                        ("dilation", {1, 2}), ("bias", {True, False})):
        assert {case[key] for case in GRID} == values, key
    assert min(c["c"] for c in GRID) == 1 and max(c["c"] for c in GRID) == 8
    assert min(c["h"] for c in GRID) == 5 and max(c["h"] for c in GRID) == 12
    assert len(GRID) == 64 and len(WINOGRAD_GRID) == 64


@pytest.mark.parametrize("name", NAMES)
def test_equals_f_conv2d_on_the_grid(name):
    grid = WINOGRAD_GRID if name == "winograd" else GRID
    tol = TOLERANCE[name]
    for i, case in enumerate(grid):
        x, w, b, opts = _operands(case, i)
        assert supports(name, conv_shape(x.shape, w.shape, *opts)) == (True, ""), case
        y = conv2d(name, x, w, b, *opts)
        ref = F.conv2d(x, w, b, *opts)
        assert y.shape == ref.shape and y.dtype == torch.float32, case
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=tol, msg=lambda m: f"{name} {case}: {m}")


def test_non_square_options_and_a_kernel_larger_than_the_image_edge():
    x, w = torch.randn(2, 4, 9, 6), torch.randn(6, 2, 3, 5)
    opts = dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2)
    ref = F.conv2d(x, w, None, **opts)
    for name in ("direct", "im2col", "kn2row", "fft"):
        torch.testing.assert_close(conv2d(name, x, w, None, **opts), ref, rtol=1e-4, atol=TOLERANCE[name])


def test_window_lists_exactly_the_taps_inside_the_image():
    for out_len, in_len, offset, stride in itertools.product((1, 4, 7), (3, 8), (-3, -1, 0, 2), (1, 2, 3)):
        inside = [o for o in range(out_len) if 0 <= o * stride + offset < in_len]
        got = window(out_len, in_len, offset, stride)
        if not inside:
            assert got is None
            continue
        outs, ins = got
        assert list(range(out_len))[outs] == inside
        assert list(range(in_len))[ins] == [o * stride + offset for o in inside]


@pytest.mark.parametrize("opts, why", [
    (dict(kernel=5), "needs a 3x3 kernel, not 5x5"),
    (dict(kernel=1), "needs a 3x3 kernel, not 1x1"),
    (dict(stride=2), "stride 1 only, not stride 2x2"),
    (dict(dilation=2), "needs dilation 1, not 2x2"),
])
def test_winograd_refuses_what_f2x3_cannot_compute(opts, why):
    k = opts.get("kernel", 3)
    x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, k, k)
    args = dict(stride=opts.get("stride", 1), dilation=opts.get("dilation", 1))
    ok, reason = supports("winograd", conv_shape(x.shape, w.shape, **args))
    assert not ok and why in reason
    with pytest.raises(ConfigError, match=f"^winograd: F\\(2x2, 3x3\\) .*{why.split(',')[0]}"):
        conv2d("winograd", x, w, None, **args)
    for other in ("direct", "im2col", "kn2row", "fft"):       # every other algorithm computes it
        assert supports(other, conv_shape(x.shape, w.shape, **args)) == (True, "")


def test_bad_arguments_are_one_error_naming_the_algorithm():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(2, 4, 3, 3)
    for name in NAMES:
        with pytest.raises(ModelError, match=f"^{name}: weights .* do not fit an input of 4 channels"):
            conv2d(name, x, w, None, groups=2)
        with pytest.raises(ConfigError, match=f"^{name}: the input is torch.float64"):
            conv2d(name, x.double(), w)
        with pytest.raises(ConfigError, match=f"^{name}: stride and dilation must be >= 1"):
            conv2d(name, x, w, None, stride=0)
        with pytest.raises(ConfigError, match=f"^{name}: padding 'same'"):
            conv2d(name, x, w, None, padding="same")
        with pytest.raises(ModelError, match=f"^{name}: .* leaves no output"):
            conv2d(name, torch.randn(1, 4, 2, 2), w)
        with pytest.raises(ModelError, match=f"^{name}: bias of shape \\[3\\] for 2 output channels"):
            conv2d(name, x, w, torch.zeros(3))
    with pytest.raises(ConfigError, match="unknown convolution algorithm 'gemm'; known: direct, im2col"):
        algorithm("gemm")
    assert set(ALGORITHMS) == {"direct", "im2col", "kn2row", "winograd", "fft"}
