"""Fixed-point requantization against a scalar transcription of gemmlowp and exact rationals."""

from __future__ import annotations

from fractions import Fraction

import torch

from deepshrink.quant.requant import (multiply_by_quantized_multiplier, multiply_single_rounding,
                                      quantize_multiplier, rounding_divide_by_pot, srdhm)

INT_MIN, INT_MAX = -(2 ** 31), 2 ** 31 - 1


# gemmlowp/fixedpoint/fixedpoint.h, one value at a time with Python integers
def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT_MIN:
        return INT_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) // (1 << 31)            # C++ division truncates toward zero
    return q if ab + nudge >= 0 else -q


def ref_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def round_half_away(fr: Fraction) -> int:
    n = abs(fr)
    r = int(n + Fraction(1, 2)) if (n - int(n)) >= Fraction(1, 2) else int(n)
    return r if fr >= 0 else -r


def test_quantize_multiplier_range_and_accuracy():
    m = torch.tensor([1e-5, 3.7e-3, 0.25, 0.4999999, 0.5, 0.9999999999, 1.0, 3.5, 0.0], dtype=torch.float64)
    m0, n = quantize_multiplier(m)
    for mi, m0i, ni in zip(m.tolist(), m0.tolist(), n.tolist()):
        if mi == 0:
            assert m0i == 0
            continue
        assert 2 ** 30 <= m0i < 2 ** 31                          # M0 in [0.5, 1)
        approx = m0i * 2.0 ** (-31 - ni)
        assert abs(approx - mi) <= mi * 2 ** -30


def test_srdhm_and_rdbpot_match_scalar_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(INT_MIN, INT_MAX, (400,), generator=g, dtype=torch.int64)
    a[:4] = torch.tensor([INT_MIN, INT_MAX, 0, -1])
    b = torch.randint(2 ** 30, 2 ** 31 - 1, (400,), generator=g, dtype=torch.int64)
    b[0] = INT_MIN
    got = srdhm(a, b)
    assert got.tolist() == [ref_srdhm(x, y) for x, y in zip(a.tolist(), b.tolist())]
    x = torch.randint(-2 ** 20, 2 ** 20, (400,), generator=g, dtype=torch.int64)
    for e in (0, 1, 5, 13):
        assert rounding_divide_by_pot(x, torch.tensor(e)).tolist() == [ref_rdbpot(v, e) for v in x.tolist()]
    # ties go away from zero
    assert rounding_divide_by_pot(torch.tensor([3, -3, 5, -5]), torch.tensor(1)).tolist() == [2, -2, 3, -3]


def test_single_rounding_is_exact_and_gemmlowp_within_one():
    g = torch.Generator().manual_seed(1)
    acc = torch.randint(-2 ** 20, 2 ** 20, (500,), generator=g, dtype=torch.int64)
    for m in (0.0031, 0.37, 0.9, 1.7):
        m0, n = quantize_multiplier(torch.tensor(m, dtype=torch.float64))
        single = multiply_single_rounding(acc, m0, n).tolist()
        double = multiply_by_quantized_multiplier(acc, m0, n).tolist()
        exact = [round_half_away(Fraction(a) * int(m0) / 2 ** (31 + int(n))) for a in acc.tolist()]
        assert single == exact
        assert max(abs(d - e) for d, e in zip(double, exact)) <= 1
        if int(n) >= 0:   # the scalar gemmlowp chain, value by value
            assert double == [ref_rdbpot(ref_srdhm(a, int(m0)), int(n)) for a in acc.tolist()]
