"""Integer codes for module swap: symmetric weight codes, int4 packing, dynamic row codes, int8 GEMM.

Symmetric linear quantization (Jacob et al. 2018, section 2, with Z = 0): a weight row w_c
(one output channel of a conv/linear layer, one row of an embedding table) is stored as codes
    q_c = clamp(round(w_c / S_c), -q_max, q_max),   S_c = max|w_c| / q_max,   q_max = 2^(b-1) - 1
and read back as S_c q_c. The range of ``S_c`` comes from a calibration observer run on the
weight itself (minmax by default, or mse clipping: Banner et al. 2019).

Storage: b <= 4 packs two codes per byte (two's-complement nibbles, even index in the low
nibble), so an int4 tensor really takes numel/2 bytes; 5..8 bits are stored one int8 per code.

Dynamic activations (the scheme of ``torch.ao.quantization.quantize_dynamic``, here per row):
each row x_t of a linear layer's input (one token) gets its own scale at run time,
S_t = max|x_t| / q_max, so y[t, c] = S_t S_c sum_k q_x[t, k] q_w[c, k] + b[c]; the sum is
exact integer arithmetic in int32 (:func:`int_matmul`).

Asymmetric rows (:func:`row_codes_asym`, the default of module swap): a row's grid spans
[min(x_t, 0), max(x_t, 0)] with a zero point Z_t, x ~ S_t (q_x - Z_t), so a one-sided row (the
output of a GELU or ReLU) uses all 2^b codes instead of half of them:
    y[t, c] = S_t S_c (sum_k q_x[t, k] q_w[c, k] - Z_t sum_k q_w[c, k]) + b[c],
still exact in int32 (:func:`zero_point_matmul`).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..errors import ConfigError
from .linear import QScheme, choose_qparams, quantize
from .observers import make_observer

__all__ = ["PACK_BITS", "packed", "weight_codes", "pack_int4", "unpack_int4", "row_codes", "row_codes_asym",
           "int_matmul", "zero_point_matmul", "int_mm_native"]

PACK_BITS = 4          # codes of at most this many bits are stored two per byte


def packed(bits: int) -> bool:
    return bits <= PACK_BITS


def weight_codes(rows: torch.Tensor, bits: int, per_channel: bool = True,
                 observer: str = "minmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric codes of a (C, K) weight: (codes int8 (C, K), scales float32 (C,)).

    ``per_channel=False`` uses one scale for the whole tensor (repeated C times)."""
    if not 2 <= bits <= 8:
        raise ConfigError(f"weight bits must be in 2..8, got {bits}")
    scheme = QScheme(bits, symmetric=True, signed=True, per_channel=per_channel, axis=0)
    obs = make_observer(observer, scheme)
    rows = rows.detach().float()
    obs.update(rows)
    lo, hi = obs.bounds()
    scale, zp = choose_qparams(lo, hi, scheme)                 # zp == 0 (symmetric)
    scale = scale.reshape(-1).expand(rows.shape[0]).contiguous()
    codes = quantize(rows, scale, 0, scheme.qmin, scheme.qmax, axis=0)
    return codes.to(torch.int8), scale


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(C, K) int8 codes in [-8, 7] -> (C, ceil(K/2)) uint8; code 2j in the low nibble of byte j."""
    c, k = codes.shape
    if k % 2:
        codes = torch.cat([codes, codes.new_zeros(c, 1)], 1)
    nib = (codes.to(torch.int16) & 0xF).to(torch.uint8)        # two's complement nibbles
    return nib[:, 0::2] | (nib[:, 1::2] << 4)


def unpack_int4(data: torch.Tensor, k: int) -> torch.Tensor:
    """(..., ceil(K/2)) uint8 -> (..., K) int8 codes: the inverse of :func:`pack_int4`."""
    # sign-extend each nibble n in 0..15 as (n ^ 8) - 8 (0..7 stay, 8..15 become -8..-1), in int8
    lo = ((data & 0xF).view(torch.int8) ^ 8) - 8
    hi = ((data >> 4).view(torch.int8) ^ 8) - 8
    return torch.stack([lo, hi], -1).reshape(*data.shape[:-1], -1)[..., :k]


def row_codes(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric codes per row of x (M, K): (codes int8 (M, K), scales float32 (M,))."""
    qmax = 2 ** (bits - 1) - 1
    x = x.float()
    scale = (x.abs().amax(1) / qmax).clamp_min(1e-8)          # (M,) an all-zero row: codes 0
    codes = (x / scale[:, None]).round_().clamp_(-qmax, qmax)  # one new (M, K) tensor, then in place
    return codes.to(torch.int8), scale


def row_codes_asym(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic asymmetric codes per row of x (M, K): (codes int8 (M, K) in [-2^(b-1), 2^(b-1) - 1],
    scales float32 (M,), zero points int32 (M,)), x ~ scale (codes - zero). The grid holds 0 exactly."""
    qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    x = x.float()
    lo, hi = torch.aminmax(x, dim=1)
    lo, hi = lo.clamp_max(0), hi.clamp_min(0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(1e-8)      # (M,)
    zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)  # lo maps to qmin
    codes = (x / scale[:, None]).round_().add_(zero[:, None]).clamp_(qmin, qmax)   # one new (M, K) tensor
    return codes.to(torch.int8), scale, zero.to(torch.int32)


@lru_cache(maxsize=None)
def int_mm_native() -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32) runs here; probed once, on first use."""
    fn = getattr(torch, "_int_mm", None)
    if fn is None:
        return False
    try:
        a = torch.tensor([[1, -2, 3]], dtype=torch.int8)
        return bool(torch.equal(fn(a, a.t().contiguous()), torch.tensor([[14]], dtype=torch.int32)))
    except RuntimeError:
        return False


def int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) int8 @ b (K, N) int8 -> int32 (M, N), exact.

    ``torch._int_mm`` where it runs (CPU: any shape); else a float64 matmul, which is exact
    as every partial sum stays below 2^53 for K < 2^38."""
    if a.device.type == "cpu" and int_mm_native():
        return torch._int_mm(a, b)
    return torch.matmul(a.double(), b.double()).to(torch.int32)


def zero_point_matmul(a: torch.Tensor, zero: torch.Tensor, b: torch.Tensor,
                      col_sums: torch.Tensor | None = None) -> torch.Tensor:
    """(a - zero[:, None]) @ b for a (M, K) int8 with zero points (M,) int32 and b (K, N) int8:
    int32 (M, N), exact (``int_matmul`` minus each row's zero point times b's column sums, in place;
    ``col_sums``: those sums (N,) int32 when the caller keeps them, else computed here)."""
    sums = b.sum(0, dtype=torch.int32) if col_sums is None else col_sums
    return int_matmul(a, b).addr_(zero, sums, alpha=-1)
