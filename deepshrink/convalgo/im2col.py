"""im2col + GEMM (Chellapilla, Puri & Simard 2006, "High Performance Convolutional Neural
Networks for Document Processing"): lower the input to a matrix whose columns are the receptive
fields, then one matrix product with the weights.

    cols[n, (c, r, s), (p, q)] = x[n, c, p sh + r dh - ph, q sw + s dw - pw]    (0 outside the image)
    y[n, group g] += W_g (K/G, C/G R S) @ cols[n, rows of g] (C/G R S, P Q)

The lowering is ours (not ``F.unfold``): a zeroed (N, C R S, P Q) buffer filled by R x S strided
copies of the input's valid windows (:func:`~.shapes.window`), so the zero padding costs no
padded copy and the buffer is the only allocation. The products are ``addmm_`` into the output
(which already holds the bias), one per sample and group, in place. Every input value is copied
up to R S / (sh sw) times: the write-up's "memory --", worst on large images. Stride, padding,
dilation and groups (split by rows of the lowered matrix) are supported.

Workspace: N C R S P Q floats (the lowered matrix).
"""

from __future__ import annotations

import torch

from .shapes import FLOAT_BYTES, ConvShape, check_operands, conv_shape, new_output, window

__all__ = ["conv2d_im2col", "workspace_im2col", "lower"]

NAME = "im2col"


def workspace_im2col(shape: ConvShape) -> int:
    """Bytes beyond input, weights and output: the lowered matrix, N x (C R S) x (P Q) floats."""
    return shape.n * shape.c * shape.r * shape.s * shape.p * shape.q * FLOAT_BYTES


def lower(x: torch.Tensor, cs: ConvShape) -> torch.Tensor:
    """The im2col matrix of ``x``: (N, C R S, P Q), rows ordered (c, r, s) like ``w.view(K, -1)``."""
    (sh, sw), (ph, pw), (dh, dw) = cs.stride, cs.padding, cs.dilation
    cols = x.new_zeros(cs.n, cs.c, cs.r, cs.s, cs.p, cs.q)         # the workspace
    for r in range(cs.r):
        rows = window(cs.p, cs.h, r * dh - ph, sh)
        if rows is None:
            continue
        for s in range(cs.s):
            cw = window(cs.q, cs.w, s * dw - pw, sw)
            if cw is not None:
                # (N, C, P', Q') valid window of tap (r, s), copied into its rows
                cols[:, :, r, s, rows[0], cw[0]] = x[:, :, rows[1], cw[1]]
    return cols.view(cs.n, cs.c * cs.r * cs.s, cs.p * cs.q)


def conv2d_im2col(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, dilation, groups)`` by im2col + GEMM (zero padding)."""
    cs = conv_shape(x.shape, w.shape, stride, padding, dilation, groups, NAME)
    check_operands(x, w, b, cs, NAME)
    y = new_output(cs, b)                                           # (N, K, P, Q)
    cols = lower(x, cs)                                             # (N, C R S, P Q)
    w_mat = w.reshape(cs.k, cs.cg * cs.r * cs.s)                    # (K, C/G R S): a view of contiguous weights
    y_mat = y.view(cs.n, cs.k, cs.p * cs.q)                         # (N, K, P Q)
    rows = cs.cg * cs.r * cs.s
    for n in range(cs.n):
        for g in range(cs.groups):
            ks = slice(g * cs.kg, (g + 1) * cs.kg)
            # (K/G, P Q) += (K/G, C/G R S) @ (C/G R S, P Q), in place
            y_mat[n, ks].addmm_(w_mat[ks], cols[n, g * rows:(g + 1) * rows])
    return y
