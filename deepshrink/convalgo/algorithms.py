"""The five convolution algorithms by name: what each computes, what it needs, what it costs.

=========  ==========================================  ========================================
name       method                                      supports
=========  ==========================================  ========================================
direct     the defining sum, tap by tap, in place      everything (stride, padding, dilation, groups)
im2col     Chellapilla et al. 2006: lowering + GEMM    everything
kn2row     Vasudevan et al. 2017: kn2row-aa, a GEMM    everything; a stride wastes sh sw times the work
           per tap + shift-add
winograd   Lavin & Gray 2016: F(2x2, 3x3)              3x3 kernels, stride 1, dilation 1; any padding, groups
fft        Mathieu et al. 2014: pointwise products     everything; a stride by subsampling the stride-1 result
           of spectra
=========  ==========================================  ========================================

Each is ``conv2d_<name>(x, w, b=None, stride=1, padding=0, dilation=1, groups=1)`` on float32
CPU tensors with zero padding, equal to ``F.conv2d`` up to rounding, and has a workspace formula
``workspace_<name>(shape)``: the bytes it allocates beyond input, weights and output, a pure
function of the :class:`~.shapes.ConvShape`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from .direct import conv2d_direct, workspace_direct
from .fft import conv2d_fft, workspace_fft
from .im2col import conv2d_im2col, workspace_im2col
from .kn2row import conv2d_kn2row, workspace_kn2row
from .shapes import ConvShape
from .winograd import conv2d_winograd, winograd_supports, workspace_winograd

__all__ = ["Algorithm", "ALGORITHMS", "NAMES", "algorithm", "supports", "workspace_bytes", "conv2d"]


def _always(shape: ConvShape) -> tuple[bool, str]:
    return True, ""


@dataclass(frozen=True)
class Algorithm:
    name: str
    method: str                                              # the citation, in words
    conv2d: Callable[..., torch.Tensor]
    workspace: Callable[[ConvShape], int]
    supports: Callable[[ConvShape], tuple[bool, str]] = _always


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("direct", "direct loop over channels and kernel taps", conv2d_direct, workspace_direct),
    Algorithm("im2col", "im2col + GEMM (Chellapilla et al. 2006)", conv2d_im2col, workspace_im2col),
    Algorithm("kn2row", "kn2row-aa: GEMM per tap + shift-add (Vasudevan et al. 2017)", conv2d_kn2row,
              workspace_kn2row),
    Algorithm("winograd", "Winograd F(2x2, 3x3) (Lavin & Gray 2016)", conv2d_winograd, workspace_winograd,
              winograd_supports),
    Algorithm("fft", "FFT convolution (Mathieu et al. 2014)", conv2d_fft, workspace_fft),
)}
NAMES = tuple(ALGORITHMS)


def algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; an unknown name is a ConfigError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown convolution algorithm {name!r}; known: {', '.join(NAMES)}") from None


def supports(algo: str, shape: ConvShape) -> tuple[bool, str]:
    """``(True, "")`` when ``algo`` computes a convolution of ``shape``, else ``(False, reason)``."""
    return algorithm(algo).supports(shape)


def workspace_bytes(algo: str, shape: ConvShape) -> int:
    """The bytes ``algo`` allocates beyond input, weights and output for ``shape`` (its formula)."""
    return algorithm(algo).workspace(shape)


def conv2d(algo: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d`` computed by ``algo``."""
    return algorithm(algo).conv2d(x, w, b, stride, padding, dilation, groups)
