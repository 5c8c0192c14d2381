"""The shape of one 2-D convolution, checked once, and the helpers every algorithm shares.

Notation (as in Lavin & Gray 2016 and Vasudevan et al. 2017): input x (N, C, H, W), weights
w (K, C/G, R, S), output y (N, K, P, Q) with

    P = (H + 2 ph - dh (R - 1) - 1) // sh + 1,   Q likewise with W, pw, dw, S, sw

for stride (sh, sw), zero padding (ph, pw), dilation (dh, dw) and G groups; group g maps input
channels [g C/G, (g+1) C/G) to output channels [g K/G, (g+1) K/G). Every tensor is float32 (4
bytes an element; the FFT's complex64 spectra 8 bytes), so a workspace formula counts elements
times :data:`FLOAT_BYTES` or :data:`COMPLEX_BYTES`.

:func:`window` is the shift every algorithm that avoids a padded copy of the input uses (the
direct loop, im2col's lowering, kn2row's shift-add): for one kernel tap, the output rows whose
input row falls inside the image, and those input rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, ModelError

__all__ = ["ConvShape", "conv_shape", "check_operands", "new_output", "window", "pair", "FLOAT_BYTES",
           "COMPLEX_BYTES"]

FLOAT_BYTES = 4      # float32
COMPLEX_BYTES = 8    # complex64: two float32


def pair(value, what: str, algo: str = "conv2d") -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as ``(height, width)``; anything else is a ConfigError."""
    items = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if items is None or len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{algo}: {what} {value!r}: expected an int or a pair of ints")
    return int(items[0]), int(items[1])


@dataclass(frozen=True)
class ConvShape:
    """One convolution's sizes: input (n, c, h, w), weights (k, c/groups, r, s), and the options."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def cg(self) -> int:          # input channels per group
        return self.c // self.groups

    @property
    def kg(self) -> int:          # output channels per group
        return self.k // self.groups

    @property
    def p(self) -> int:           # output height
        return (self.h + 2 * self.padding[0] - self.dilation[0] * (self.r - 1) - 1) // self.stride[0] + 1

    @property
    def q(self) -> int:           # output width
        return (self.w + 2 * self.padding[1] - self.dilation[1] * (self.s - 1) - 1) // self.stride[1] + 1

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return self.n, self.k, self.p, self.q

    @property
    def output_bytes(self) -> int:
        return self.n * self.k * self.p * self.q * FLOAT_BYTES

    @property
    def macs(self) -> int:
        return self.n * self.k * self.p * self.q * self.cg * self.r * self.s

    def to_dict(self) -> dict:
        return {"input_shape": [self.n, self.c, self.h, self.w], "weight_shape": [self.k, self.cg, self.r, self.s],
                "output_shape": list(self.output_shape), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "groups": self.groups}


def conv_shape(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, algo: str = "conv2d") -> ConvShape:
    """The checked :class:`ConvShape` of an input of ``x_shape`` and weights of ``w_shape``.

    Options as ``F.conv2d`` takes them (an int or a pair; padding in pixels, zeros); a bad option
    is a ConfigError and weights that do not fit the input a ModelError, each naming ``algo``."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ModelError(f"{algo}: expected a 4-D input (N, C, H, W) and 4-D weights (K, C/groups, R, S), got "
                         f"{list(x_shape)} and {list(w_shape)}")
    sh, sw = pair(stride, "stride", algo)
    ph, pw = pair(padding, "padding", algo)
    dh, dw = pair(dilation, "dilation", algo)
    if min(sh, sw) < 1 or min(dh, dw) < 1 or min(ph, pw) < 0:
        raise ConfigError(f"{algo}: stride and dilation must be >= 1 and padding >= 0, got stride {(sh, sw)}, "
                          f"padding {(ph, pw)}, dilation {(dh, dw)}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ConfigError(f"{algo}: groups {groups!r}: expected an int >= 1")
    n, c, h, w = (int(v) for v in x_shape)
    k, cg, r, s = (int(v) for v in w_shape)
    if c % groups or k % groups or cg * groups != c:
        raise ModelError(f"{algo}: weights {list(w_shape)} with groups={groups} do not fit an input of {c} channels "
                         f"(need C = groups x weight.shape[1] and K divisible by groups)")
    shape = ConvShape(n, c, h, w, k, r, s, (sh, sw), (ph, pw), (dh, dw), groups)
    if min(shape.n, shape.c, shape.k, shape.r, shape.s) < 1 or shape.p < 1 or shape.q < 1:
        raise ModelError(f"{algo}: input {list(x_shape)} with weights {list(w_shape)}, padding {(ph, pw)} and "
                         f"dilation {(dh, dw)} leaves no output")
    return shape


def check_operands(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, shape: ConvShape, algo: str) -> None:
    """float32 CPU tensors, a bias of K values: anything else is one error naming ``algo``."""
    for name, t in (("input", x), ("weight", w), ("bias", b)):
        if t is None:
            continue
        if t.dtype != torch.float32:
            raise ConfigError(f"{algo}: the {name} is {t.dtype}; these implementations compute in float32 "
                              f"(convert with .float())")
        if t.device.type != "cpu":
            raise ConfigError(f"{algo}: the {name} is on {t.device}; these implementations run on the CPU")
    if b is not None and tuple(b.shape) != (shape.k,):
        raise ModelError(f"{algo}: bias of shape {list(b.shape)} for {shape.k} output channels")


def new_output(shape: ConvShape, b: torch.Tensor | None) -> torch.Tensor:
    """The output (N, K, P, Q), holding the bias (or zeros): every algorithm allocates it first,
    so that the measured peak minus the output's bytes is the algorithm's workspace."""
    if b is None:
        return torch.zeros(shape.output_shape)
    y = torch.empty(shape.output_shape)
    y.copy_(b.view(1, shape.k, 1, 1))   # a broadcast copy: no temporary
    return y


def window(out_len: int, in_len: int, offset: int, stride: int) -> tuple[slice, slice] | None:
    """For one kernel tap at input offset ``offset`` (= tap x dilation - padding): the output
    indices o with 0 <= o x stride + offset < in_len, and the input indices they read, as two
    slices of equal length; None when no output reads inside the image."""
    lo = max(0, -(offset // stride))                     # ceil(-offset / stride): first o inside
    last = in_len - 1 - offset                            # o x stride <= last
    hi = min(out_len, last // stride + 1) if last >= 0 else 0
    if hi <= lo:
        return None
    start = lo * stride + offset
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)
