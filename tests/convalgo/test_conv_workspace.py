"""Each algorithm's workspace formula against its measured peak, and the measurement itself.

The measured workspace is the peak of the bytes the call's allocations hold through torch's CPU
allocator (the profiler's memory events) minus the output's bytes. Stated tolerance: none, equal
to the byte. Every buffer the implementations use is allocated explicitly (the ops they call
allocate only their outputs), so the formula and the allocator see the same bytes; a torch
version whose kernels start allocating hidden temporaries would show up here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepshrink.convalgo import NAMES, algorithm, conv_shape, supports, workspace_bytes
from deepshrink.convalgo.measure import allocation_events, interleaved_median_ms, median_ms, peak_bytes
from deepshrink.convalgo.shapes import FLOAT_BYTES
from deepshrink.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

# (N, C, H, W), (K, C/G, R, S), stride, padding, dilation, groups: a LeNet-like and a ResNet-like
# layer, a strided and padded 1x1 shortcut, a grouped dilated one, and an odd output size
# (Winograd's partial tiles)
SHAPES = [
    ((1, 1, 28, 28), (6, 1, 5, 5), 1, 0, 1, 1),
    ((1, 16, 16, 16), (16, 16, 3, 3), 1, 1, 1, 1),
    ((2, 8, 9, 9), (16, 8, 1, 1), 2, 0, 1, 1),
    ((2, 6, 11, 10), (4, 3, 3, 3), 1, 2, 2, 2),
    ((1, 3, 9, 8), (5, 3, 3, 3), 1, 0, 1, 1),
]


@pytest.mark.parametrize("name", NAMES)
def test_formula_equals_the_measured_peak(name):
    measured_any = False
    for x_shape, w_shape, stride, pad, dil, groups in SHAPES:
        cs = conv_shape(x_shape, w_shape, stride, pad, dil, groups)
        if not supports(name, cs)[0]:
            continue
        x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
        y, peak = peak_bytes(lambda: algorithm(name).conv2d(x, w, b, stride, pad, dil, groups))
        assert y.shape == cs.output_shape
        assert peak - cs.output_bytes == workspace_bytes(name, cs), (name, cs)
        measured_any = True
    assert measured_any


def test_the_formulas_rank_as_the_write_up_says():
    """Direct: no workspace; kn2row far less than im2col on a wide layer; FFT the most."""
    cs = conv_shape((1, 64, 16, 16), (64, 64, 3, 3), 1, 1)
    ws = {name: workspace_bytes(name, cs) for name in NAMES}
    assert ws["direct"] == 0
    assert ws["im2col"] == 64 * 9 * 16 * 16 * FLOAT_BYTES
    assert ws["kn2row"] < ws["im2col"] / 2 and ws["fft"] == max(ws.values())


def test_peak_bytes_counts_what_is_alive_at_once():
    def two_in_turn():
        a = torch.empty(1000)           # 4000 B
        del a
        b = torch.empty(500)            # 2000 B, after a is freed
        return b

    def two_together():
        a = torch.empty(1000)
        b = torch.empty(500)
        return a, b

    assert peak_bytes(two_in_turn)[1] == 4000
    assert peak_bytes(two_together)[1] == 6000
    assert allocation_events(two_in_turn)[1] == [4000, -4000, 2000]
    x, y = torch.randn(4, 4), torch.randn(4, 4)
    assert peak_bytes(lambda: x.add_(y))[1] == 0    # in place: nothing allocated; x and y existed before
    assert peak_bytes(lambda: x + y)[1] == 64       # the result


def test_timing_is_a_positive_median_and_checks_repeats():
    times = interleaved_median_ms({"a": lambda: F.relu(torch.ones(8)), "b": lambda: None}, repeats=3)
    assert set(times) == {"a", "b"} and times["a"] > 0 and times["b"] >= 0
    assert median_ms(lambda: None, 1) >= 0
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        median_ms(lambda: None, 0)
