"""Closed-form costs of convolution blocks (regular, depthwise, pointwise, separable, MobileNetV2).

Shapes: input and output H x W x C (stride 1, "same" padding), kernel k x k, expansion t.
Memory accesses count every operand read and every result written once: each MAC reads one
input and one weight, each output element is written once (bias reads are not MAC operands and are not counted).

* regular conv        MACs H W k^2 C^2      params k^2 C^2 + C   mem 2 H W k^2 C^2 + H W C
* depthwise conv      MACs H W k^2 C        params k^2 C + C     mem 2 H W k^2 C + H W C
* pointwise conv      MACs H W C^2          params C^2 + C       mem 2 H W C^2 + H W C
* separable (fused)   depthwise then pointwise as one operation: the intermediate H W C
  tensor is never written, so mem = 2 H W C (k^2 + C) + H W C
* inverted bottleneck (Sandler et al. 2018): 1x1 C -> tC, k x k depthwise on tC,
  1x1 tC -> C, each layer writing its output: MACs H W t C (2 C + k^2),
  mem 4 t H W C^2 + 2 t k^2 H W C + 2 t H W C + H W C.

``c_out`` generalises the regular and pointwise forms to C_in != C_out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BlockCost", "regular", "depthwise", "pointwise", "separable_fused", "inverted_bottleneck"]


@dataclass(frozen=True)
class BlockCost:
    macs: int
    params: int
    memory_accesses: int


def regular(H: int, W: int, C: int, k: int, c_out: int | None = None, bias: bool = True) -> BlockCost:
    co = C if c_out is None else c_out
    macs = H * W * k * k * C * co
    return BlockCost(macs, k * k * C * co + (co if bias else 0), 2 * macs + H * W * co)


def depthwise(H: int, W: int, C: int, k: int, bias: bool = True) -> BlockCost:
    macs = H * W * k * k * C
    return BlockCost(macs, k * k * C + (C if bias else 0), 2 * macs + H * W * C)


def pointwise(H: int, W: int, C: int, c_out: int | None = None, bias: bool = True) -> BlockCost:
    return regular(H, W, C, 1, c_out, bias)


def separable_fused(H: int, W: int, C: int, k: int, bias: bool = True) -> BlockCost:
    dw, pw = depthwise(H, W, C, k, bias), pointwise(H, W, C, bias=bias)
    # fused: the depthwise output (H W C values) stays on chip, never written
    return BlockCost(dw.macs + pw.macs, dw.params + pw.params, dw.memory_accesses + pw.memory_accesses - H * W * C)


def inverted_bottleneck(H: int, W: int, C: int, k: int, t: int, bias: bool = True) -> BlockCost:
    expand = pointwise(H, W, C, t * C, bias)
    dw = depthwise(H, W, t * C, k, bias)
    project = pointwise(H, W, t * C, C, bias)
    parts = (expand, dw, project)
    return BlockCost(sum(p.macs for p in parts), sum(p.params for p in parts),
                     sum(p.memory_accesses for p in parts))
