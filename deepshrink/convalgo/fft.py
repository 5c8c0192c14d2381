"""FFT convolution (Mathieu, Henaff & LeCun 2014, "Fast Training of Convolutional Networks
through FFTs"): a convolution is a pointwise product in the frequency domain, summed over input
channels there, with one inverse transform per output plane.

    X = rfft2(x padded) (N, C, Hf, Wf/2+1)     Wk = conj(rfft2(w zero-filled to Hf x Wf)) (K, C/G, Hf, Wf/2+1)
    Y[f] (N, K/G) = X[f] (N, C/G) @ Wk[f] (C/G, K/G)   for every frequency f and group
    y = irfft2(Y)[:, :, :P sh : sh, :Q sw : sw] + b

As in the paper, the channel sum is one complex matrix product per frequency (a batched GEMM
over the Hf (Wf/2+1) frequencies and the groups), for which both spectra are first copied into
frequency-major layout. Hf x Wf = (H + 2 ph) x (W + 2 pw): the circular cross-correlation of the
padded image with the kernel equals the linear one at every position the kernel fits, so no
larger transform is needed (no rounding up to powers of two). Dilation zero-fills the kernel
(taps dh, dw apart). A stride is computed by subsampling the stride-1 result, documented here as
the choice made: the transforms cost the same whatever the stride (the write-up rates FFT
"strided +"). The transforms' cost does not shrink with the kernel, which is why small kernels
are its bad case: the kernel is zero-filled to the image's size, K C/G planes of Hf x Wf. Its
spectra are computed on every call (as in training, where the weights change every step); an
inference engine would keep them, at 8 K C/G Hf (Wf/2+1) bytes instead of the weights'
4 K C/G R S.

Memory is spent on spectra (complex64, 8 bytes an element), and every buffer is explicit: torch's
own multi-dimensional inverse on CPU copies its input internally a varying number of times, so
the inverse is done as a 1-D ``ifft`` along H and a 1-D ``irfft`` along W, each on the last,
contiguous dimension (which, like ``rfft2`` and ``matmul``, allocates only its output), with an
explicit transposed copy before each.

Workspace: the largest of the sets of buffers alive at once, in the order they are made:
kernel buffer + its spectrum, spectrum + its frequency-major copy Wt, Wt + padded input + X,
Wt + X + Xf (X frequency-major), Wt + Xf + Y, then two of Y, Y transposed, Z (after the inverse
along H), Z transposed at a time, and Z transposed + the full real result (N K Hf Wf floats).
With F = Hf (Wf/2+1) complex elements a plane: 4 K C/G Hf Wf + 8 K C/G F, 16 K C/G F,
8 K C/G F + 4 N C Hf Wf (with padding) + 8 N C F, 8 K C/G F + 16 N C F, 8 (K C/G F + N C F +
N K F), 16 N K F, 8 N K F + 4 N K Hf Wf.
"""

from __future__ import annotations

import torch

from .shapes import COMPLEX_BYTES, FLOAT_BYTES, ConvShape, check_operands, conv_shape, new_output

__all__ = ["conv2d_fft", "workspace_fft", "fft_size"]

NAME = "fft"


def fft_size(shape: ConvShape) -> tuple[int, int]:
    """The transform size (Hf, Wf): the padded input's."""
    return shape.h + 2 * shape.padding[0], shape.w + 2 * shape.padding[1]


def workspace_fft(shape: ConvShape) -> int:
    """Bytes beyond input, weights and output: the largest set of buffers alive at once (above)."""
    hf, wf = fft_size(shape)
    f = hf * (wf // 2 + 1)                                  # one half-spectrum, complex elements
    n, c, k, cg = shape.n, shape.c, shape.k, shape.cg
    padded = n * c * hf * wf * FLOAT_BYTES if shape.padding != (0, 0) else 0
    spec_x, spec_w, spec_y = (n * c * f * COMPLEX_BYTES, k * cg * f * COMPLEX_BYTES, n * k * f * COMPLEX_BYTES)
    kernel = k * cg * hf * wf * FLOAT_BYTES
    full = n * k * hf * wf * FLOAT_BYTES
    return max(kernel + spec_w, 2 * spec_w, spec_w + padded + spec_x, spec_w + 2 * spec_x,
               spec_w + spec_x + spec_y, 2 * spec_y, spec_y + full)


def _frequency_major(spec: torch.Tensor, groups: int) -> torch.Tensor:
    """A copy of a spectrum (A, B, Hf, Wf/2+1), A = G x A/G, as (Hf, Wf/2+1, G, B, A/G): one
    (B, A/G) matrix per frequency and group, contiguous for the batched GEMM."""
    a, b, hf, wf2 = spec.shape
    grouped = spec.view(groups, a // groups, b, hf, wf2)                   # splits dim 0 only: a view
    order = (3, 4, 0, 2, 1)
    out = spec.new_empty([grouped.shape[i] for i in order])
    out.copy_(grouped.permute(order))
    return out


def conv2d_fft(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
               dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, dilation, groups)`` by FFT (zero padding; a stride by
    subsampling the stride-1 result)."""
    cs = conv_shape(x.shape, w.shape, stride, padding, dilation, groups, NAME)
    check_operands(x, w, b, cs, NAME)
    (sh, sw), (ph, pw), (dh, dw) = cs.stride, cs.padding, cs.dilation
    hf, wf = fft_size(cs)
    g = cs.groups
    y = new_output(cs, b)                                                   # (N, K, P, Q)
    kernel = w.new_zeros(cs.k, cs.cg, hf, wf)                               # the kernel zero-filled (dilated)
    kernel[:, :, :(cs.r - 1) * dh + 1:dh, :(cs.s - 1) * dw + 1:dw] = w
    spec_w = torch.fft.rfft2(kernel)                                        # (K, C/G, Hf, Wf/2+1)
    del kernel
    w_t = _frequency_major(spec_w, g)                        # (Hf, Wf/2+1, G, C/G, K/G)
    del spec_w
    w_t.conj_physical_()                                                    # correlation, not convolution
    if (ph, pw) != (0, 0):
        xp = x.new_zeros(cs.n, cs.c, hf, wf)                                # (N, C, Hf, Wf)
        xp[:, :, ph:ph + cs.h, pw:pw + cs.w] = x
    else:
        xp = x
    spec_x = torch.fft.rfft2(xp)                                            # (N, C, Hf, Wf/2+1)
    del xp
    x_f = _frequency_major(spec_x.transpose(0, 1), g)        # (Hf, Wf/2+1, G, N, C/G)
    del spec_x
    spec_y = torch.matmul(x_f, w_t)                                         # (Hf, Wf/2+1, G, N, K/G)
    del x_f, w_t
    y_t = spec_y.new_empty(cs.n, g, cs.kg, wf // 2 + 1, hf)                 # (N, G, K/G, Wf/2+1, Hf)
    y_t.copy_(spec_y.permute(3, 2, 4, 1, 0))
    del spec_y
    z = torch.fft.ifft(y_t.view(cs.n, cs.k, wf // 2 + 1, hf), dim=-1)       # inverse along H: (N, K, Wf/2+1, Hf)
    del y_t
    z_t = z.transpose(2, 3).contiguous()                                    # (N, K, Hf, Wf/2+1)
    del z
    full = torch.fft.irfft(z_t, n=wf, dim=-1)                               # inverse along W: (N, K, Hf, Wf)
    del z_t
    y.add_(full[:, :, :(cs.p - 1) * sh + 1:sh, :(cs.q - 1) * sw + 1:sw])    # valid positions, subsampled
    return y
