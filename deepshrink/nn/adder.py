"""Adder layers: convolution and linear layers that measure similarity by L1 distance.

Chen et al. 2020, "AdderNet: Do We Really Need Multiplications in Deep Learning?" (CVPR).
A convolution output is a similarity S summed over
the window; AdderNet takes S(x, w) = -|x - w|, so larger still means more alike:

    Y[n, s, p] = -sum_{c, i, j} | X[n, c, p + (i, j)] - W[s, c, i, j] |     (+ b[s])

Forward: only subtractions, absolute values and additions. Backward (the paper's eqs. 5-6):

* dY/dW = X - W, the full-precision gradient; the exact derivative sign(X - W) only says
  which way to move, not how far, and trains poorly (as in signSGD);
* dY/dX = HardTanh(W - X) = clamp(W - X, -1, 1): the exact derivative is sign(W - X), and
  the unclipped W - X would let gradients grow through a deep stack.

Memory: the forward never builds the (N, C_out, C_in k k, L) difference tensor. The input
is unfolded into window rows a batch chunk at a time (at most ``chunk_elements`` numbers); -Y
for the chunk comes from ``torch.cdist(p=1)``, a pairwise-L1 kernel with no large
intermediate, for small windows, and from 1 MiB blocks of |W - X| otherwise. The backward
gathers the saved input's rows again chunk by chunk: dL/dW is two matrix products
(sum g (X - W) = g^T X - W * sum g), dL/dX needs clamp(W - X) for every (row, s, k) and is
computed on the same row blocks. Only the input is saved, as nn.Conv2d does. Padding is
with zeros, which count |0 - W| in the distance (as in the authors' unfold-based code).

Not supported (ConfigError): groups != 1, padding strings ('same'/'valid'), padding modes
other than zeros. The backward is not itself differentiable (no double backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import ConfigError, ModelError
from .adaptive import adaptive_scale

__all__ = ["AdderConv2d", "AdderLinear", "adder_rows", "adder_conv2d", "adder_linear", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 1 << 22   # numbers (16 MiB in float32) per temporary: unfolded columns
CACHE_BLOCK = 1 << 18     # numbers per (rows, S, K) difference block: 1 MiB, 2-3x faster
                          # than 16 MiB blocks on one CPU thread (measured), same result
CDIST_MAX_K = 32          # up to this window size torch.cdist(p=1) is the faster kernel


def _rows_per_block(S: int, K: int, chunk: int) -> int:
    return max(1, min(chunk, CACHE_BLOCK) // max(1, S * K))


def adder_rows(rows: torch.Tensor, weight: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """-L1 distance of every row to every weight row: (R, K) x (S, K) -> (R, S).

    Small K: torch.cdist(p=1), a pairwise kernel with no intermediate. Larger K: row blocks
    of the (b, S, K) difference, |.|, summed over K (faster there on CPU).
    """
    R, K = rows.shape
    S = weight.shape[0]
    if K <= CDIST_MAX_K:
        return torch.cdist(rows.unsqueeze(0), weight.unsqueeze(0), p=1).squeeze(0).neg_()
    out = rows.new_empty(R, S)
    block = _rows_per_block(S, K, chunk)
    for r0 in range(0, R, block):
        d = weight.unsqueeze(0) - rows[r0:r0 + block].unsqueeze(1)               # (b, S, K)
        out[r0:r0 + block] = d.abs_().sum(2)
    return out.neg_()


def _input_grad_rows(rows: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor,
                     chunk: int) -> torch.Tensor:
    """sum_s grad[r, s] * clamp(W[s, k] - rows[r, k], -1, 1) -> (R, K), in row blocks."""
    R, K = rows.shape
    S = weight.shape[0]
    out = torch.empty_like(rows)
    block = _rows_per_block(S, K, chunk)           # rows per block: block * S * K numbers
    for r0 in range(0, R, block):
        r1 = min(R, r0 + block)
        d = (weight.unsqueeze(0) - rows[r0:r1].unsqueeze(1)).clamp_(-1.0, 1.0)   # (b, S, K)
        out[r0:r1] = torch.bmm(grad[r0:r1].unsqueeze(1), d).squeeze(1)          # (b, K)
    return out


def _weight_grad_rows(rows: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """sum_r grad[r, s] * (rows[r, k] - W[s, k]) = grad^T rows - W * sum_r grad -> (S, K)."""
    return grad.t() @ rows - weight * grad.sum(0).unsqueeze(1)


def _window_rows(x: torch.Tensor, kernel, stride, padding, dilation, Ho: int, Wo: int) -> torch.Tensor:
    """Every window of x as a row: (b, C, H, W) -> (b Ho Wo, C kh kw), ordered like
    ``F.unfold(x).transpose(1, 2)`` but gathered by one strided copy (2-4x faster on CPU
    than unfold followed by the transposing copy; measured)."""
    b, C = x.shape[:2]
    if padding[0] or padding[1]:
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    sn, sc, sh, sw = x.stride()
    win = x.as_strided((b, Ho, Wo, C, *kernel),
                       (sn, sh * stride[0], sw * stride[1], sc, sh * dilation[0], sw * dilation[1]))
    return win.reshape(b * Ho * Wo, C * kernel[0] * kernel[1])


class _AdderConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, eta, chunk):
        N, C, H, W = x.shape
        S, _, kh, kw = weight.shape
        Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        K, L = C * kh * kw, Ho * Wo
        w2 = weight.reshape(S, K)
        out = x.new_empty(N, S, L)
        nb = max(1, chunk // max(1, L * max(K, S)))  # samples per chunk
        for n0 in range(0, N, nb):
            rows = _window_rows(x[n0:n0 + nb], (kh, kw), stride, padding, dilation, Ho, Wo)  # (b L, K)
            b = rows.shape[0] // L
            out[n0:n0 + b] = adder_rows(rows, w2, chunk).view(b, L, S).transpose(1, 2)  # (b, S, L)
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, eta, chunk, Ho, Wo)
        return out.view(N, S, Ho, Wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, eta, chunk, Ho, Wo = ctx.conf
        N, C, H, W = x.shape
        S, _, kh, kw = weight.shape
        K, L = C * kh * kw, Ho * Wo
        w2 = weight.reshape(S, K)
        g = grad_out.reshape(N, S, L)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None
        gw = torch.zeros_like(w2) if need_w else None
        nb = max(1, chunk // max(1, L * max(K, S)))
        for n0 in range(0, N, nb):
            rows = _window_rows(x[n0:n0 + nb], (kh, kw), stride, padding, dilation, Ho, Wo)  # (b L, K)
            b = rows.shape[0] // L
            grows = g[n0:n0 + b].transpose(1, 2).reshape(b * L, S)               # (b L, S)
            if need_w:
                gw += _weight_grad_rows(rows, w2, grows)
            if need_x:
                gcols = _input_grad_rows(rows, w2, grows, chunk).view(b, L, K).transpose(1, 2)
                gx[n0:n0 + b] = F.fold(gcols, (H, W), (kh, kw), dilation, padding, stride)
        if need_w and eta is not None:
            gw = adaptive_scale(gw, eta)
        return gx, (gw.view_as(weight) if need_w else None), None, None, None, None, None


class _AdderLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eta, chunk):
        ctx.save_for_backward(x, weight)
        ctx.conf = (eta, chunk)
        return adder_rows(x, weight, chunk)                                       # (R, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        eta, chunk = ctx.conf
        gx = _input_grad_rows(x, weight, grad_out, chunk) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            gw = _weight_grad_rows(x, weight, grad_out)
            if eta is not None:
                gw = adaptive_scale(gw, eta)
        return gx, gw, None, None


def adder_conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 eta: float | None = None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Functional adder convolution: (N, C_in, H, W) x (C_out, C_in, kh, kw) -> (N, C_out, Ho, Wo)."""
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ModelError(f"adder convolution: input of shape {tuple(x.shape)} does not fit weights of shape "
                         f"{tuple(weight.shape)} (expected N x {weight.shape[1]} x H x W)")
    for d, size in enumerate(x.shape[2:]):
        if size + 2 * padding[d] < dilation[d] * (weight.shape[2 + d] - 1) + 1:
            raise ModelError(f"adder convolution: input {tuple(x.shape)} is smaller than the padded window")
    y = _AdderConvFn.apply(x, weight, stride, padding, dilation, eta, chunk)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def adder_linear(x, weight, bias=None, eta: float | None = None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Functional adder linear layer: (..., in) x (out, in) -> (..., out)."""
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ModelError(f"adder linear: input of shape {tuple(x.shape)} does not fit weights of shape "
                         f"{tuple(weight.shape)}")
    lead = x.shape[:-1]
    y = _AdderLinearFn.apply(x.reshape(-1, x.shape[-1]), weight, eta, chunk).view(*lead, weight.shape[0])
    return y if bias is None else y + bias


def _pair(v, name: str = "argument") -> tuple[int, int]:
    if isinstance(v, str):
        raise ConfigError(f"AdderConv2d: {name}={v!r} is not supported; give integers")
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
        raise ConfigError(f"AdderConv2d: {name} must be an int or a pair of ints, got {v!r}")
    return t


def _check_eta(eta, where: str):
    if eta is not None and not (isinstance(eta, (int, float)) and eta > 0):
        raise ConfigError(f"{where}: eta must be a positive number or None, got {eta!r}")
    return None if eta is None else float(eta)


def _init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    # W ~ N(0, 1), as in the authors' code: a weight is a template compared with the input by
    # distance, so it belongs on the input's scale (unit variance after normalisation or BN).
    # The variance 1 / fan_in (LeCun init) suits a product; here it would make every template ~0 and
    # the output -||x||_1 whatever the weights (it trains far slower; docs/METHODS.md).
    with torch.no_grad():
        weight.normal_(0.0, 1.0)
        if bias is not None:
            bias.zero_()


class AdderConv2d(nn.Module):
    """Drop-in for nn.Conv2d (no groups): Y = -sum |X - W| over each window, plus the bias.

    ``eta``: when given, the weight gradient is replaced by its adaptive-rate form
    eta * sqrt(k) * g / ||g||_2 in the backward (see :mod:`deepshrink.nn.adaptive`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, groups: int = 1, padding_mode: str = "zeros",
                 eta: float | None = None, chunk_elements: int = DEFAULT_CHUNK):
        super().__init__()
        if groups != 1:
            raise ConfigError(f"AdderConv2d: groups={groups} is not supported (only 1)")
        if padding_mode != "zeros":
            raise ConfigError(f"AdderConv2d: padding_mode={padding_mode!r} is not supported (only 'zeros')")
        if min(in_channels, out_channels) < 1 or chunk_elements < 1:
            raise ConfigError("AdderConv2d: channels and chunk_elements must be >= 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ConfigError("AdderConv2d: kernel_size, stride, dilation must be >= 1 and padding >= 0")
        self.eta = _check_eta(eta, "AdderConv2d")
        self.chunk_elements = int(chunk_elements)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, C_out, Ho, Wo)
        return adder_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                            self.eta, self.chunk_elements)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, eta={self.eta}")


class AdderLinear(nn.Module):
    """Drop-in for nn.Linear: Y[r, s] = -sum_i |X[r, i] - W[s, i]| + b[s]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 eta: float | None = None, chunk_elements: int = DEFAULT_CHUNK):
        super().__init__()
        if min(in_features, out_features) < 1 or chunk_elements < 1:
            raise ConfigError("AdderLinear: features and chunk_elements must be >= 1")
        self.in_features, self.out_features = in_features, out_features
        self.eta = _check_eta(eta, "AdderLinear")
        self.chunk_elements = int(chunk_elements)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        _init_(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return adder_linear(x, self.weight, self.bias, self.eta, self.chunk_elements)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, eta={self.eta}"
