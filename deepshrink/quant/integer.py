"""Integer-only inference of a fake-quantized model (Jacob et al. 2018, sections 2.2-2.4).

Every tensor between layers is a code tensor q on a grid (S, Z). A conv or linear layer
    acc[c] = sum (q_x - Z_x)(q_w[c] - Z_w[c]) + q_b[c],    q_b = round(b / (S_x S_w[c]))
accumulates int8 x int8 products in int32 (computed with int64 matmuls, which equal int32
accumulation because ``compile`` checks that K * max|q_x - Z_x| * max|q_w| + max|q_b| < 2^31,
so no partial sum can overflow), then requantizes with the fixed-point multiplier of
:mod:`requant` (single rounding by default, gemmlowp's double rounding on request) and clamps to [Z_out, q_max] when a ReLU is fused, else [q_min, q_max].
Residual adds are integer too (TFLite's scheme): both inputs are shifted left by 20 bits,
brought to the common scale 2 max(S_a, S_b) by fixed-point multipliers < 1, summed and
requantized. Max-pooling works on codes; global average pooling sums codes in int32 and
divides with rounding, staying on its input's grid. Only the network input is quantized from
float and only the output logits are dequantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .fakequant import FakeQuant, QuantLayer
from .graph import fused_relu, node_kind, quantizer_of
from .linear import channel_view, quantize
from .requant import INT32_MAX, INT32_MIN, ROUNDINGS, quantize_multiplier, requantize

__all__ = ["IntegerModel", "conv2d_int", "linear_int", "Grid"]

ADD_SHIFT = 20


@dataclass(frozen=True)
class Grid:
    scale: float
    zero_point: int
    qmin: int
    qmax: int

    @classmethod
    def of(cls, fq: FakeQuant) -> "Grid":
        if fq.scale.numel() != 1:
            raise ModelError("the integer engine needs per-tensor activation quantizers")
        return cls(float(fq.scale), int(fq.zero_point), fq.scheme.qmin, fq.scheme.qmax)


def conv2d_int(x: torch.Tensor, w: torch.Tensor, stride, padding, dilation, groups: int) -> torch.Tensor:
    """Integer convolution by im2col: x (N, C, H, W), w (O, C/g, kh, kw) -> int64 (N, O, H', W')."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    o, cg, kh, kw = w.shape
    x = F.pad(x, (pw, pw, ph, ph))                    # zero-centred codes: 0 is real zero
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    p = x.unfold(2, ekh, sh).unfold(3, ekw, sw)[..., ::dh, ::dw]  # (N, C, H', W', kh, kw)
    n, _, ho, wo = p.shape[:4]
    og = o // groups
    outs = []
    for g in range(groups):
        cols = p[:, g * cg:(g + 1) * cg].permute(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, cg * kh * kw)
        outs.append(cols.to(torch.int64) @ w[g * og:(g + 1) * og].reshape(og, -1).to(torch.int64).T)
    return torch.cat(outs, 1).reshape(n, ho, wo, o).permute(0, 3, 1, 2)


def linear_int(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (N, K) @ w (O, K)^T in integers -> int64 (N, O)."""
    return x.to(torch.int64) @ w.to(torch.int64).T


def _maxpool_int(x: torch.Tensor, m: nn.MaxPool2d) -> torch.Tensor:
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    s = m.stride if isinstance(m.stride, tuple) else (m.stride or k[0],) * 2
    p = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
    if m.dilation not in (1, (1, 1)) or m.ceil_mode:
        raise ModelError("integer max-pool supports dilation 1 without ceil_mode")
    x = F.pad(x, (p[1], p[1], p[0], p[0]), value=INT32_MIN)
    return x.unfold(2, k[0], s[0]).unfold(3, k[1], s[1]).amax((-2, -1))


def _round_div(s: torch.Tensor, n: int) -> torch.Tensor:
    """round(s / n) for integers, ties away from zero."""
    return torch.sign(s) * torch.div(s.abs() + n // 2, n, rounding_mode="floor")


class IntegerModel:
    """Runs a frozen fake-quantized GraphModule (from ``prepare``) on integer codes only."""

    def __init__(self, gm: fx.GraphModule, rounding: str = "single"):
        if rounding not in ROUNDINGS:
            raise ConfigError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.gm, self.rounding = gm, rounding
        self.mods = dict(gm.named_modules())
        self.steps = [self._compile(node) for node in gm.graph.nodes]

    # ------------------------------------------------------------------ compilation
    def _out_grid(self, node: fx.Node) -> tuple[Grid, bool]:
        tail = fused_relu(node, self.mods)
        after = list((tail or node).users)
        if len(after) != 1 or node_kind(after[0], self.mods) != "fq":
            raise ModelError(f"{node.name}: output is not followed by one quantizer")
        return Grid.of(self.mods[after[0].target]), tail is not None

    def _in_grid(self, arg, where: str) -> Grid:
        fq = quantizer_of(arg, self.mods)
        if fq is None:
            raise ModelError(f"{where}: input is not quantized")
        return Grid.of(fq)

    def _compile(self, node: fx.Node):
        kind = node_kind(node, self.mods)
        if kind == "compute" and node.op == "call_module":
            return self._compile_layer(node)
        if kind == "compute":
            return self._compile_add(node)
        if kind == "fq":
            m = self.mods[node.target]
            src = node.args[0]
            if node_kind(src, self.mods) == "input":
                g = Grid.of(m)
                return lambda env: quantize(env[src], g.scale, g.zero_point, g.qmin, g.qmax)
            return lambda env: env[src]     # the producer already wrote codes on this grid
        if kind == "relu":
            src = node.args[0]
            if node_kind(src, self.mods) == "compute" and fused_relu(src, self.mods) is node:
                return lambda env: env[src]  # clamped by the producer
            g = self._in_grid(src, node.name)
            return lambda env: env[src].clamp_min(g.zero_point)
        if kind == "pass":
            return self._compile_pass(node)
        if kind == "avg":
            return self._compile_avg(node)
        if kind in ("input", "output"):
            return None
        raise ModelError(f"the integer engine has no rule for node {node.name} ({node.op} {node.target})")

    def _compile_layer(self, node: fx.Node):
        ql: QuantLayer = self.mods[node.target]
        gin = self._in_grid(node.args[0], node.name)
        gout, relu = self._out_grid(node)
        wq, layer = ql.weight_fq, ql.layer
        axis = 0 if wq.scale.numel() > 1 else None
        w = quantize(layer.weight.detach(), wq.scale, wq.zero_point, wq.scheme.qmin, wq.scheme.qmax, axis)
        w = w - (channel_view(wq.zero_point, w.dim(), 0) if axis is not None else wq.zero_point)
        s_w = wq.scale.detach().double().expand(w.shape[0])                  # (O,)
        s_bias = gin.scale * s_w
        b = torch.zeros(w.shape[0], dtype=torch.int64) if layer.bias is None else \
            torch.round(layer.bias.detach().double() / s_bias).clamp(INT32_MIN, INT32_MAX).to(torch.int64)
        k = w[0].numel()
        bound = k * max(abs(gin.qmin - gin.zero_point), abs(gin.qmax - gin.zero_point)) * int(w.abs().max()) \
            + int(b.abs().max())
        if bound >= 2 ** 31:
            raise ModelError(f"{node.target}: int32 accumulator could overflow (bound {bound})")
        m0, n = quantize_multiplier(s_bias / gout.scale)                     # (O,), (O,)
        lo = max(gout.qmin, gout.zero_point) if relu else gout.qmin
        conv = isinstance(layer, nn.Conv2d)
        if conv and (isinstance(layer.padding, str) or layer.padding_mode != "zeros"):
            raise ModelError(f"{node.target}: the integer engine needs explicit zero padding")
        shape = (1, -1, 1, 1) if conv else (1, -1)
        m0, n, b = m0.reshape(shape), n.reshape(shape), b.reshape(shape)
        src, zin = node.args[0], gin.zero_point

        def step(env):
            x = env[src] - zin
            acc = (conv2d_int(x, w, layer.stride, layer.padding, layer.dilation, layer.groups) if conv
                   else linear_int(x, w)) + b
            q = requantize(acc.to(torch.int32), m0, n, self.rounding) + gout.zero_point
            return q.clamp(lo, gout.qmax)
        return step

    def _compile_add(self, node: fx.Node):
        a, b = node.args[:2]
        ga, gb = self._in_grid(a, node.name), self._in_grid(b, node.name)
        gout, relu = self._out_grid(node)
        twice_max = 2 * max(ga.scale, gb.scale)
        ma, na = quantize_multiplier(torch.tensor(ga.scale / twice_max))
        mb, nb = quantize_multiplier(torch.tensor(gb.scale / twice_max))
        mo, no = quantize_multiplier(torch.tensor(twice_max / ((1 << ADD_SHIFT) * gout.scale)))
        lo = max(gout.qmin, gout.zero_point) if relu else gout.qmin

        def step(env):
            xa = requantize((env[a] - ga.zero_point) << ADD_SHIFT, ma, na, self.rounding)
            xb = requantize((env[b] - gb.zero_point) << ADD_SHIFT, mb, nb, self.rounding)
            q = requantize(xa + xb, mo, no, self.rounding) + gout.zero_point
            return q.clamp(lo, gout.qmax)
        return step

    def _compile_pass(self, node: fx.Node):
        src = node.args[0]
        if node.op == "call_module":
            m = self.mods[node.target]
            if isinstance(m, nn.MaxPool2d):
                return lambda env: _maxpool_int(env[src], m)
            if isinstance(m, nn.Flatten):
                return lambda env: env[src].flatten(m.start_dim, m.end_dim)
            return lambda env: env[src]          # dropout (eval), identity
        if node.op == "call_function":           # torch.flatten
            rest, kw = node.args[1:], node.kwargs
            return lambda env: torch.flatten(env[src], *rest, **kw)
        method, rest = node.target, node.args[1:]
        return lambda env: getattr(env[src], method)(*[env[r] if isinstance(r, fx.Node) else r for r in rest])

    def _compile_avg(self, node: fx.Node):
        src = node.args[0]
        m = self.mods.get(node.target) if node.op == "call_module" else None
        out = m.output_size if isinstance(m, nn.AdaptiveAvgPool2d) else (node.args[1] if len(node.args) > 1 else None)
        if isinstance(m, nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
            if m.padding not in (0, (0, 0)) or tuple(s) != tuple(k):
                raise ModelError(f"{node.name}: integer avg-pool needs stride == kernel and no padding")
            return lambda env: _round_div(env[src].unfold(2, k[0], k[0]).unfold(3, k[1], k[1]).sum((-2, -1)),
                                          k[0] * k[1])
        if out not in (1, (1, 1)):
            raise ModelError(f"{node.name}: integer adaptive avg-pool supports output size 1 only")
        return lambda env: _round_div(env[src].sum((-2, -1), keepdim=True), env[src].shape[-2] * env[src].shape[-1])

    # ------------------------------------------------------------------ running
    @torch.no_grad()
    def run_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Output codes (int64) and their grid for float input ``x``."""
        env: dict = {}
        out_node = None
        for node, step in zip(self.gm.graph.nodes, self.steps):
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "output":
                out_node = node.args[0]
            else:
                env[node] = step(env)
        if not isinstance(out_node, fx.Node):
            raise ModelError("the integer engine supports a single output tensor")
        return env[out_node], self._in_grid(out_node, "output")

    def __call__(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Dequantized outputs S (q - Z) for ``x`` (N, ...), float32."""
        outs = []
        for lo in range(0, len(x), batch_size):
            q, g = self.run_codes(x[lo:lo + batch_size])
            outs.append(g.scale * (q - g.zero_point).to(torch.float32))
        return torch.cat(outs)
