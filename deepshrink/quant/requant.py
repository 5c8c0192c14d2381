"""Fixed-point requantization, as in gemmlowp and TFLite (Jacob et al. 2018, section 2.2).

A layer's int32 accumulator acc (scale S_in S_w) becomes output codes of scale S_out by the
real multiplier M = S_in S_w / S_out, written M = M0 * 2^-n with M0 in [0.5, 1) held as the
int32 M0_int = round(M0 * 2^31). Then
    q_out = Z_out + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, M0_int), n),
where SRDHM(a, b) = round(a b / 2^31) (ties away from zero) and RoundingDivideByPOT(x, n) =
round(x / 2^n) (ties away from zero), both exact integer functions. Everything is int64
arithmetic on values that fit int32, so no floating point is involved at inference.

That is two roundings in a row: when the first lands on a tie of the second, the result is one
step off the exactly rounded acc * M (a fraction of about 2^-n of the values). TFLite's
single-rounding mode (``TFLITE_SINGLE_ROUNDING``) rounds once: round(acc * M0_int / 2^(31+n)),
with acc * M0_int < 2^62 exact in int64. Both are here; ``rounding="single"`` is the
engine's default because its error does not compound through deep networks.
"""

from __future__ import annotations

import torch

__all__ = ["quantize_multiplier", "srdhm", "rounding_divide_by_pot", "multiply_by_quantized_multiplier",
           "requantize", "ROUNDINGS", "INT32_MIN", "INT32_MAX"]

ROUNDINGS = ("single", "gemmlowp")

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def quantize_multiplier(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M0_int, n) with m ~= M0_int * 2^-31 * 2^-n, M0_int in [2^30, 2^31) (0 for m = 0).

    ``n`` is negative when m >= 1 (a left shift). Inputs are float64 for exactness.
    """
    m = torch.as_tensor(m, dtype=torch.float64)
    mant, exp = torch.frexp(m)                       # m = mant * 2^exp, mant in [0.5, 1)
    m0 = torch.round(mant * 2.0 ** 31).to(torch.int64)
    carry = m0 == 2 ** 31                            # mant rounded up to 1.0
    m0 = torch.where(carry, m0 // 2, m0)
    n = -(exp.to(torch.int64) + carry.to(torch.int64))
    zero = m == 0
    return torch.where(zero, 0, m0), torch.where(zero, 0, n)


def srdhm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SaturatingRoundingDoublingHighMul of int32 values (given as int64): round(a b / 2^31)."""
    a, b = a.to(torch.int64), torch.as_tensor(b, dtype=torch.int64)
    ab = a * b                                        # |ab| < 2^62: exact in int64
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return torch.where(overflow, INT32_MAX, out)


def rounding_divide_by_pot(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """round(x / 2^exponent), ties away from zero, by shifts and masks (exponent >= 0)."""
    x = x.to(torch.int64)
    e = torch.as_tensor(exponent, dtype=torch.int64)
    mask = (torch.ones_like(e) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> e) + (remainder > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(x: torch.Tensor, m0: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x * M0_int * 2^-31 * 2^-n with gemmlowp rounding; n < 0 shifts left first (TFLite)."""
    n = torch.as_tensor(n, dtype=torch.int64)
    left = torch.clamp(-n, min=0)
    right = torch.clamp(n, min=0, max=62)
    x = x.to(torch.int64) << left
    return rounding_divide_by_pot(srdhm(x, m0), right)


def multiply_single_rounding(x: torch.Tensor, m0: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """round(x * M0_int / 2^(31 + n)), one rounding (ties away from zero), n > -31."""
    n = torch.as_tensor(n, dtype=torch.int64)
    return rounding_divide_by_pot(x.to(torch.int64) * torch.as_tensor(m0, dtype=torch.int64),
                                  torch.clamp(31 + n, min=0, max=62))


def requantize(x: torch.Tensor, m0: torch.Tensor, n: torch.Tensor, rounding: str = "single") -> torch.Tensor:
    """x * M with M = M0_int 2^-31 2^-n, by the named rounding scheme."""
    if rounding == "single":
        return multiply_single_rounding(x, m0, n)
    return multiply_by_quantized_multiplier(x, m0, n)
