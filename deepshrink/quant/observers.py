"""Calibration observers: watch a tensor's values, then name the real range [lo, hi] to quantize.

* ``minmax``: the running minimum and maximum (Jacob et al. 2018 for weights);
* ``moving_average``: exponential moving averages of each batch's min and max (Jacob et al.
  2018, section 3, for activations);
* ``percentile``: the p-th and (100 - p)-th percentiles of a bounded random sample of the
  values seen, which clips rare outliers (McKinstry et al. 2019);
* ``mse``: the clipping range alpha * [lo, hi], alpha on a grid in [0.3, 1], that minimises the
  squared quantization error of the sample (Banner et al. 2019; per channel for weights).

Per channel: every statistic is taken along ``axis`` (a (C,) vector per bound).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .linear import QScheme, choose_qparams, fake_quantize

__all__ = ["Observer", "MinMaxObserver", "MovingAverageObserver", "PercentileObserver", "MSEObserver",
           "OBSERVERS", "make_observer"]


def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(C, K) view with one row per channel, or (1, numel) per tensor."""
    x = x.detach().float()
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


class Observer:
    """Base: ``update(x)`` for each batch, then ``bounds() -> (lo, hi)`` (scalars or (C,))."""

    def __init__(self, scheme: QScheme):
        self.scheme = scheme
        self.axis = scheme.axis if scheme.per_channel else None
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        r = _rows(x, self.axis)
        lo, hi = r.amin(1), r.amax(1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None:
            raise ConfigError("observer saw no data: calibrate with at least one batch")
        return self._squeeze(self.lo), self._squeeze(self.hi)

    def _squeeze(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(()) if self.axis is None else t


class MinMaxObserver(Observer):
    pass


class MovingAverageObserver(Observer):
    def __init__(self, scheme: QScheme, momentum: float = 0.1):
        super().__init__(scheme)
        self.momentum = momentum

    def update(self, x: torch.Tensor) -> None:
        r = _rows(x, self.axis)
        lo, hi = r.amin(1), r.amax(1)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.lo + self.momentum * (lo - self.lo)
            self.hi = self.hi + self.momentum * (hi - self.hi)


class _Sampling(Observer):
    """Keeps a bounded, seeded random sample of each channel's values."""

    def __init__(self, scheme: QScheme, per_batch: int = 65536, cap: int = 1 << 21, seed: int = 0):
        super().__init__(scheme)
        self.per_batch, self.cap = per_batch, cap
        self.gen = torch.Generator().manual_seed(seed)
        self.samples: list[torch.Tensor] = []
        self.kept = 0

    def update(self, x: torch.Tensor) -> None:
        super().update(x)  # exact min/max too
        r = _rows(x, self.axis)
        if self.kept >= self.cap:
            return
        k = min(r.shape[1], max(1, self.per_batch // r.shape[0]))
        if k < r.shape[1]:
            r = r[:, torch.randperm(r.shape[1], generator=self.gen)[:k]]
        self.samples.append(r)
        self.kept += r.numel()

    def sample(self) -> torch.Tensor:
        if not self.samples:
            raise ConfigError("observer saw no data: calibrate with at least one batch")
        return torch.cat(self.samples, 1)  # (C, K)


class PercentileObserver(_Sampling):
    def __init__(self, scheme: QScheme, percentile: float = 99.99, **kw):
        super().__init__(scheme, **kw)
        if not 50 < percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def bounds(self):
        s = self.sample()
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(s, q, dim=1)
        return self._squeeze(lo), self._squeeze(hi)


class MSEObserver(_Sampling):
    def __init__(self, scheme: QScheme, grid: int = 36, **kw):
        super().__init__(scheme, **kw)
        self.grid = grid

    def bounds(self):
        s = self.sample()                                   # (C, K)
        lo0, hi0 = self.lo, self.hi                         # (C,)
        best = torch.full_like(lo0, float("inf"))
        best_lo, best_hi = lo0.clone(), hi0.clone()
        sch = self.scheme
        for alpha in torch.linspace(0.3, 1.0, self.grid):
            lo, hi = alpha * lo0, alpha * hi0
            scale, zp = choose_qparams(lo, hi, sch)
            err = (fake_quantize(s, scale, zp, sch.qmin, sch.qmax, axis=0) - s).pow(2).mean(1)
            better = err < best
            best = torch.where(better, err, best)
            best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
        return self._squeeze(best_lo), self._squeeze(best_hi)


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, scheme: QScheme) -> Observer:
    try:
        return OBSERVERS[name](scheme)
    except KeyError:
        raise ConfigError(f"unknown observer {name!r}; choose from {', '.join(OBSERVERS)}") from None
