"""kn2row (Vasudevan, Anderson & Gregg 2017, "Parallel Multi Channel Convolution using General
Matrix Multiplication"), in its accumulating form (the paper's kn2row-aa): no lowering of the
input at all; one 1x1 convolution (a GEMM on the unmodified input) per kernel tap, each partial
result shifted and added into the output.

    for each tap (r, s):   T (K/G, H W) = W[:, :, r, s] (K/G, C/G) @ x[n, group] (C/G, H W)
                           y[n, k, p, q] += T[k, p sh + r dh - ph, q sw + s dw - pw]   (inside the image)

The weights are first reordered to (R, S, K, C/G) so each tap's matrix is contiguous; T is one
buffer reused by every tap (``torch.mm(..., out=T)``), and the shift-add reads a strided window
of it (:func:`~.shapes.window`), so padding needs no padded copy. Each GEMM has inner dimension
C/G: few input channels make thin, inefficient GEMMs (the write-up's "bad case: few channels").
A stride is supported, but every tap computes T at all H W input positions and the shift-add
keeps only every sh-th row and sw-th column: sh sw times the work (the write-up's "strided --").
Dilation and groups (one GEMM per group) are supported.

Workspace: R S K C/G floats (the reordered weights; none for a 1x1 kernel, already in order)
+ K/G H W floats (T).
"""

from __future__ import annotations

import torch

from .shapes import FLOAT_BYTES, ConvShape, check_operands, conv_shape, new_output, window

__all__ = ["conv2d_kn2row", "workspace_kn2row"]

NAME = "kn2row"


def workspace_kn2row(shape: ConvShape) -> int:
    """Bytes beyond input, weights and output: the reordered weights (R S K C/G floats; none for a
    1x1 kernel, whose weights already are (K, C/G)) and one partial-result buffer (K/G H W floats)."""
    reorder = 0 if shape.r * shape.s == 1 else shape.r * shape.s * shape.k * shape.cg
    return (reorder + shape.kg * shape.h * shape.w) * FLOAT_BYTES


def conv2d_kn2row(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, dilation, groups)`` by kn2row-aa (zero padding)."""
    cs = conv_shape(x.shape, w.shape, stride, padding, dilation, groups, NAME)
    check_operands(x, w, b, cs, NAME)
    x = x.contiguous()                                              # a no-op for an NCHW activation
    (sh, sw), (ph, pw), (dh, dw) = cs.stride, cs.padding, cs.dilation
    y = new_output(cs, b)                                           # (N, K, P, Q)
    if cs.r * cs.s == 1:
        taps = w.reshape(1, 1, cs.k, cs.cg)                         # already (K, C/G): a view
    else:
        taps = w.new_empty(cs.r, cs.s, cs.k, cs.cg)                 # (R, S, K, C/G): workspace
        taps.copy_(w.permute(2, 3, 0, 1))
    part = x.new_empty(cs.kg, cs.h * cs.w)                          # T (K/G, H W): workspace
    plane = part.view(cs.kg, cs.h, cs.w)
    x_mat = x.view(cs.n, cs.c, cs.h * cs.w)                         # (N, C, H W)
    shifts = []
    for r in range(cs.r):
        for s in range(cs.s):
            rows, cols = window(cs.p, cs.h, r * dh - ph, sh), window(cs.q, cs.w, s * dw - pw, sw)
            if rows is not None and cols is not None:               # a tap that never lands in the image: skipped
                shifts.append((r, s, rows, cols))
    for n in range(cs.n):
        for g in range(cs.groups):
            ks, xs = slice(g * cs.kg, (g + 1) * cs.kg), slice(g * cs.cg, (g + 1) * cs.cg)
            for r, s, rows, cols in shifts:
                torch.mm(taps[r, s, ks], x_mat[n, xs], out=part)    # (K/G, C/G) @ (C/G, H W)
                y[n, ks, rows[0], cols[0]].add_(plane[:, rows[1], cols[1]])   # shift-add (K/G, P', Q')
    return y
