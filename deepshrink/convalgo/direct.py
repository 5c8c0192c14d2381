"""The direct loop: the convolution's defining sum, accumulated tap by tap into the output.

    y[n, k, p, q] = b[k] + sum_{c, r, s} w[k, c, r, s] x[n, g C/G + c, p sh + r dh - ph, q sw + s dw - pw]

The loop runs over input channels and kernel taps (C x R x S iterations, not over pixels): each
iteration is one in-place ``addcmul_`` of a shifted, strided view of one input channel times one
weight per output channel of its group, broadcast over (N, K/G, P', Q') into the output's valid
window (:func:`~.shapes.window`), so the zero padding is never materialised. Nothing else is
allocated: the workspace is 0 bytes, the write-up's "memory ++, time --" (every multiply-add is
issued separately, without a GEMM's blocking and reuse). Stride, padding, dilation and groups are
all supported.
"""

from __future__ import annotations

import torch

from .shapes import ConvShape, check_operands, conv_shape, new_output, window

__all__ = ["conv2d_direct", "workspace_direct"]

NAME = "direct"


def workspace_direct(shape: ConvShape) -> int:
    """Bytes beyond input, weights and output: none (every update is in place on views)."""
    return 0


def conv2d_direct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, dilation, groups)`` by the direct loop (zero padding)."""
    cs = conv_shape(x.shape, w.shape, stride, padding, dilation, groups, NAME)
    check_operands(x, w, b, cs, NAME)
    y = new_output(cs, b)                                   # (N, K, P, Q)
    (sh, sw), (ph, pw), (dh, dw) = cs.stride, cs.padding, cs.dilation
    for r in range(cs.r):
        rows = window(cs.p, cs.h, r * dh - ph, sh)
        if rows is None:
            continue
        for s in range(cs.s):
            cols = window(cs.q, cs.w, s * dw - pw, sw)
            if cols is None:
                continue
            y_win = y[:, :, rows[0], cols[0]]                # (N, K, P', Q') view of the output
            x_win = x[:, :, rows[1], cols[1]]                # (N, C, P', Q') strided view of the input
            for c in range(cs.c):
                g, cl = divmod(c, cs.cg)
                ks = slice(g * cs.kg, (g + 1) * cs.kg)
                # (N, K/G, P', Q') += (N, 1, P', Q') * (1, K/G, 1, 1)
                y_win[:, ks].addcmul_(x_win[:, c:c + 1], w[ks, cl, r, s][None, :, None, None])
    return y
