"""Linear (affine) quantization r = S (q - Z): the pure maths, with STE and LSQ gradients.

Jacob et al. 2018, section 2: a real value r is stored as an integer code q with a real scale
S > 0 and an integer zero point Z chosen so that r = 0 is exactly representable:
    q = clamp(round(r / S) + Z, q_min, q_max),    r_hat = S (q - Z).
* symmetric: Z = 0 (signed codes) and S = max|r| / q_max, on the restricted range
  [-(2^(b-1) - 1), 2^(b-1) - 1] so that -q_max..q_max is symmetric too;
* asymmetric: the range [min(lo, 0), max(hi, 0)] is mapped onto [q_min, q_max] and
  Z = q_min - round(lo / S).
Per tensor or per channel (one S, Z per slice along ``axis``), 2 to 8 bits.

Backward passes (Bengio et al. 2013; Esser et al. 2020):
* straight-through estimator: d r_hat / d r = 1 inside the clipping range
  q_min <= r / S + Z <= q_max, 0 outside;
* LSQ: the step S is learnt; d r_hat / d S = round(r/S) - r/S inside, q_min or q_max
  (minus Z) outside, scaled by g = 1 / sqrt(numel * q_max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = ["QScheme", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
           "lsq_fake_quantize", "channel_view"]


@dataclass(frozen=True)
class QScheme:
    """How one tensor is quantized."""

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    per_channel: bool = False
    axis: int = 0                # channel axis when per_channel

    def check(self, what: str = "scheme") -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"{what}: bits must be in 2..8, got {self.bits}")

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.signed, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.signed, self.symmetric)[1]


def qrange(bits: int, signed: bool, symmetric: bool) -> tuple[int, int]:
    """Integer code range; symmetric signed codes drop -2^(b-1) (restricted range)."""
    if signed:
        hi = 2 ** (bits - 1) - 1
        return (-hi if symmetric else -hi - 1), hi
    return 0, 2 ** bits - 1


def channel_view(t: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a per-channel vector (C,) to broadcast along ``axis`` of an ndim tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def choose_qparams(lo: torch.Tensor, hi: torch.Tensor, scheme: QScheme,
                   eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) from the real range [lo, hi] (scalars or per-channel vectors)."""
    lo = torch.minimum(torch.as_tensor(lo, dtype=torch.float32), torch.zeros(()))
    hi = torch.maximum(torch.as_tensor(hi, dtype=torch.float32), torch.zeros(()))
    qmin, qmax = scheme.qmin, scheme.qmax
    if scheme.symmetric:
        amax = torch.maximum(-lo, hi)
        if scheme.signed:
            scale = (amax / qmax).clamp_min(eps)
            zp = torch.zeros_like(scale, dtype=torch.int64)
        else:  # unsigned symmetric: the middle code is zero
            scale = (2 * amax / (qmax - qmin)).clamp_min(eps)
            zp = torch.full_like(scale, (qmin + qmax + 1) // 2, dtype=torch.int64)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(eps)
        zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zp


def _bcast(x: torch.Tensor, scale, zp, axis: int | None):
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    zp = torch.as_tensor(zp, device=x.device).to(x.dtype)
    if axis is not None and scale.dim() == 1 and scale.numel() > 1:
        scale, zp = channel_view(scale, x.dim(), axis), channel_view(zp, x.dim(), axis)
    return scale, zp


def quantize(x: torch.Tensor, scale, zp, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """Integer codes (int64) of ``x``: clamp(round(x / S) + Z, q_min, q_max); ties to even."""
    s, z = _bcast(x, scale, zp, axis)
    return (torch.round(x / s) + z).clamp(qmin, qmax).to(torch.int64)


def dequantize(q: torch.Tensor, scale, zp, axis: int | None = None) -> torch.Tensor:
    """Real values S (q - Z), float32."""
    qf = q.to(torch.float32)
    s, z = _bcast(qf, scale, zp, axis)
    return s * (qf - z)


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        v = torch.round(x / scale) + zp            # codes before clipping
        ctx.save_for_backward((v >= qmin) & (v <= qmax))
        return scale * (v.clamp(qmin, qmax) - zp)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale, zp, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """Quantize then dequantize in float; straight-through gradient inside the clipping range."""
    s, z = _bcast(x, scale, zp, axis)
    return _FakeQuantSTE.apply(x, s, z, qmin, qmax)


def _grad_scale(t: torch.Tensor, g: float) -> torch.Tensor:
    # forward: t; backward: g * grad
    return (t - t * g).detach() + t * g


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    return (torch.round(t) - t).detach() + t


def lsq_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zp, qmin: int, qmax: int,
                      axis: int | None = None) -> torch.Tensor:
    """LSQ (Esser et al. 2020): fake quantization whose step ``scale`` receives a gradient."""
    n = x.numel() if scale.numel() == 1 else x.numel() // scale.numel()
    g = 1.0 / math.sqrt(max(1, n) * max(1, qmax))
    s = _grad_scale(scale, g)
    s, z = _bcast(x, s, zp, axis)
    v = torch.clamp(x / s + z, qmin, qmax)          # clipped: zero gradient to x outside
    return (_round_ste(v) - z) * s
