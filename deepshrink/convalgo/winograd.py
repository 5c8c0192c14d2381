"""Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks"): each 2x2 output tile from a 4x4 input tile with 16 multiplies
instead of 36,

    Y = A^T [ (G g G^T) . (B^T d B) ] A       (. elementwise; g the 3x3 kernel, d the 4x4 tile)

with the paper's matrices B^T (4x4), G (4x3) and A^T (2x4) below. As in the paper the 16
elementwise products become 16 GEMMs over channels: with U = G g G^T (16, K, C/G) and
V = B^T d B (16, C, N T) for the T = ceil(P/2) ceil(Q/2) tiles of each image,
M[xi] = U[xi] @ V[xi] (one batched matmul, groups as a batch dimension), then Y = A^T M A.

Only 3x3 kernels, stride 1 and dilation 1: other shapes are refused (:func:`winograd_supports`).
Any zero padding and any groups. The input is copied once into a zero buffer padded to whole
tiles ((2 ceil(P/2) + 2) x (2 ceil(Q/2) + 2)); no copy when it already is. Every transform is a
sum of in-place ``add_`` on views, so the only allocations are U, the padded copy, V and M; the
output transform adds straight into the output's even/odd rows and columns.

Workspace: 16 K C/G + 16 C N T + max(padded input, 16 K N T) floats: U and V are alive through
both phases (V being built while the padded copy exists; M computed, the copy freed).
Rounding: the transforms add and subtract up to 4, 9 and 9 terms (with the factors 1/2 of G),
so the error is a few times that of a direct sum, and grows with the tile's dynamic range (the
write-up's "unpredictable"); the tests allow for it.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .shapes import FLOAT_BYTES, ConvShape, check_operands, conv_shape, new_output

__all__ = ["conv2d_winograd", "workspace_winograd", "winograd_supports", "B_T", "G", "A_T"]

NAME = "winograd"

B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))     # 4x4 input transform
G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))         # 4x3 kernel transform
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))                                   # 2x4 output transform


def winograd_supports(shape: ConvShape) -> tuple[bool, str]:
    """``(True, "")``, or ``(False, why)`` for a kernel other than 3x3, a stride or a dilation."""
    if (shape.r, shape.s) != (3, 3):
        return False, f"F(2x2, 3x3) needs a 3x3 kernel, not {shape.r}x{shape.s}"
    if shape.stride != (1, 1):
        return False, f"F(2x2, 3x3) computes stride 1 only, not stride {shape.stride[0]}x{shape.stride[1]}"
    if shape.dilation != (1, 1):
        return False, f"F(2x2, 3x3) needs dilation 1, not {shape.dilation[0]}x{shape.dilation[1]}"
    return True, ""


def _tiles(shape: ConvShape) -> tuple[int, int, int, int]:
    """(tiles down, tiles across, padded height, padded width): whole 4x4 tiles overlapping by 2."""
    tp, tq = math.ceil(shape.p / 2), math.ceil(shape.q / 2)
    return tp, tq, 2 * tp + 2, 2 * tq + 2


def _needs_copy(shape: ConvShape) -> bool:
    _, _, ht, wt = _tiles(shape)
    return (ht, wt) != (shape.h, shape.w)      # padding, or an odd output size


def workspace_winograd(shape: ConvShape) -> int:
    """Bytes beyond input, weights and output: U (16 K C/G), V (16 C N T), and the larger of the
    tile-padded input copy (N C Ht Wt, when one is needed) and M (16 K N T), in floats."""
    tp, tq, ht, wt = _tiles(shape)
    t = shape.n * tp * tq
    padded = shape.n * shape.c * ht * wt if _needs_copy(shape) else 0
    return (16 * shape.k * shape.cg + 16 * shape.c * t + max(padded, 16 * shape.k * t)) * FLOAT_BYTES


def _transform(out: torch.Tensor, src, coef) -> None:
    """out[i, j] = sum_{a, b} coef[i][a] coef[j][b] src(a, b), in place on views (no temporaries):
    a term of coefficient 1 is copied first (no zero fill), the others added."""
    for i, row_i in enumerate(coef):
        for j, row_j in enumerate(coef):
            terms = sorted(((ca * cb, a, b_) for a, ca in enumerate(row_i) for b_, cb in enumerate(row_j) if ca * cb),
                           key=lambda t: t[0] != 1)
            dst = out[i, j]
            if terms[0][0] == 1:
                dst.copy_(src(*terms[0][1:]))
                terms = terms[1:]
            else:
                dst.zero_()
            for c, a, b_ in terms:
                dst.add_(src(a, b_), alpha=c)


def conv2d_winograd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                    dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, dilation, groups)`` by Winograd F(2x2, 3x3); a
    ConfigError for what F(2x2, 3x3) cannot compute (:func:`winograd_supports`)."""
    cs = conv_shape(x.shape, w.shape, stride, padding, dilation, groups, NAME)
    check_operands(x, w, b, cs, NAME)
    ok, why = winograd_supports(cs)
    if not ok:
        raise ConfigError(f"{NAME}: {why}")
    tp, tq, ht, wt = _tiles(cs)
    ph, pw = cs.padding
    y = new_output(cs, b)                                               # (N, K, P, Q)
    u = w.new_empty(4, 4, cs.k, cs.cg)                                  # U = G g G^T
    _transform(u, lambda a, b_: w[:, :, a, b_], G)                      # (K, C/G) per (xi, nu)
    if _needs_copy(cs):
        xp = x.new_zeros(cs.n, cs.c, ht, wt)                            # padded to whole tiles
        xp[:, :, ph:ph + cs.h, pw:pw + cs.w] = x
    else:
        xp = x
    d = xp.unfold(2, 4, 2).unfold(3, 4, 2)                              # (N, C, tp, tq, 4, 4) view of the tiles
    v = x.new_empty(4, 4, cs.c, cs.n, tp, tq)                           # V = B^T d B
    _transform(v, lambda a, b_: d[..., a, b_].transpose(0, 1), B_T)     # (C, N, tp, tq) per (xi, nu)
    del d, xp
    grouped = (16, cs.groups)
    m = torch.matmul(u.view(*grouped, cs.kg, cs.cg),                   # (16, G, K/G, C/G)
                     v.view(*grouped, cs.cg, cs.n * tp * tq))           # @ (16, G, C/G, N T)
    del u, v
    m = m.view(4, 4, cs.k, cs.n, tp, tq)                                # M: (K, N, tp, tq) per (xi, nu)
    for e in range(2):                                                  # Y = A^T M A into y's tile phases
        for f in range(2):
            rows, cols = math.ceil((cs.p - e) / 2), math.ceil((cs.q - f) / 2)
            dst = y[:, :, e::2, f::2]                                   # (N, K, rows, cols)
            for i, ci in enumerate(A_T[e]):
                for j, cj in enumerate(A_T[f]):
                    if ci * cj:
                        dst.add_(m[i, j, :, :, :rows, :cols].transpose(0, 1), alpha=ci * cj)
    return y
