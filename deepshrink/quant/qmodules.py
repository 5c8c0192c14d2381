"""Quantized twins of nn.Linear, nn.Conv1d/2d and nn.Embedding that hold REAL integer weights.

The module-swap route to quantization (no tracing, so any ``nn.Module`` works, Hugging Face
transformers included): each layer keeps its weight as symmetric integer codes, one scale per
output channel (per row for an embedding table), see :mod:`.intmath` (Jacob et al. 2018, Z = 0):

* buffer ``weight_codes``: (C, K) int8, or (C, ceil(K/2)) uint8 two codes per byte when the
  layer has at most 4 bits; K is the product of the weight's other dimensions;
* buffer ``weight_scale``: (C,) float32; the real weight is ``weight_scale[c] * codes[c]``;
* attribute ``weight_bits``: the bits per code (the profiler's ``<p>_bits`` convention);
* ``bias``: a float parameter, as in the float layer.

A linear twin with ``act_bits`` set also quantizes its input at run time, one grid per row
(token): asymmetric (a zero point per row, :func:`.intmath.row_codes_asym`) unless
``act_symmetric``, and computes int8 x int8 -> int32 exactly (:func:`.intmath.zero_point_matmul`,
with the weight codes' column sums cached).
A smoothed twin (SmoothQuant, :mod:`.smooth`) also holds ``input_smooth`` (K,): its codes
quantize W * s and its input is divided by s first. Convolutions
and embeddings dequantize their weight (weight-only quantization). ``weight`` is a read-only
property (the dequantized weight) so code that reads ``layer.weight`` keeps working, and
``profiled_layer`` shows the profiler the float layer the twin computes, with the codes as its
weight, so parameters, nonzeros, bits and MACs are counted as for the float layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .intmath import (int_matmul, pack_int4, packed, row_codes, row_codes_asym, unpack_int4, weight_codes,
                      zero_point_matmul)
from .smooth import SMOOTH

__all__ = ["CODES", "SCALE", "QuantLinear", "QuantConv", "QuantEmbedding", "QUANT_MODULES"]

CODES, SCALE = "weight_codes", "weight_scale"      # buffer names the quantized files hold


class _CodedWeight(nn.Module):
    """Common state: integer codes and per-row scales of a weight of shape ``weight_shape``."""

    def _init_codes(self, shape: tuple[int, ...], bits: int) -> None:
        self.weight_shape, self.weight_bits = tuple(int(s) for s in shape), int(bits)
        c, k = self.weight_shape[0], math.prod(self.weight_shape[1:])
        dtype, cols = (torch.uint8, (k + 1) // 2) if packed(bits) else (torch.int8, k)
        self.register_buffer(CODES, torch.zeros(c, cols, dtype=dtype))
        self.register_buffer(SCALE, torch.ones(c))

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, per_channel: bool = True, observer: str = "minmax") -> None:
        """Quantize a float ``weight`` (of ``weight_shape``) into the codes and scales."""
        codes, scale = weight_codes(weight.reshape(self.weight_shape[0], -1), self.weight_bits, per_channel,
                                    observer)
        self.weight_codes.copy_(pack_int4(codes) if packed(self.weight_bits) else codes)
        self.weight_scale.copy_(scale)

    def int_codes(self) -> torch.Tensor:
        """(C, K) int8 codes, unpacked."""
        k = math.prod(self.weight_shape[1:])
        return unpack_int4(self.weight_codes, k) if packed(self.weight_bits) else self.weight_codes

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight (read-only), of ``weight_shape``."""
        return (self.int_codes().float() * self.weight_scale[:, None]).reshape(self.weight_shape)

    def _float_twin(self) -> nn.Module:
        raise NotImplementedError

    @property
    def profiled_layer(self) -> nn.Module:
        """The float layer type with the codes as its weight (cached while the codes are unchanged)."""
        key = (self.weight_codes.data_ptr(), self.weight_codes._version)
        cached = self.__dict__.get("_profiled")
        if cached is None or cached[0] != key:
            shell = self._float_twin()
            shell.weight = nn.Parameter(self.int_codes().reshape(self.weight_shape), requires_grad=False)
            if hasattr(shell, "bias"):
                shell.bias = getattr(self, "bias", None)
            shell.weight_bits = self.weight_bits
            cached = (key, shell)
            self.__dict__["_profiled"] = cached                   # not a submodule: no state, no params
        return cached[1]


class QuantLinear(_CodedWeight):
    """y = x W^T + b, W as codes; ``act_bits``: x quantized per row at run time (None: float x),
    asymmetric unless ``act_symmetric``; ``smoothed``: x divided by ``input_smooth`` first."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 8,
                 act_bits: int | None = 8, act_symmetric: bool = True, smoothed: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.act_bits = in_features, out_features, act_bits
        self.act_symmetric = bool(act_symmetric)
        self._init_codes((out_features, in_features), bits)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer(SMOOTH, torch.ones(in_features) if smoothed else None)

    @classmethod
    def shell(cls, m: nn.Linear, bits: int, act_bits: int | None, act_symmetric: bool = True,
              smoothed: bool = False) -> "QuantLinear":
        return cls(m.in_features, m.out_features, m.bias is not None, bits, act_bits, act_symmetric, smoothed)

    @property
    def smoothed(self) -> bool:
        return self.input_smooth is not None

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight of the layer as it computes (read-only): a smoothed twin's
        codes hold W * s, so this is (codes * scale) / s."""
        w = super().weight
        return w if self.input_smooth is None else w / self.input_smooth[None, :]

    def _float_twin(self) -> nn.Module:
        return nn.Linear(self.in_features, self.out_features, bias=False, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits is None:
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        rows = x.reshape(-1, self.in_features)                    # (M, K): one row per token
        if self.input_smooth is not None:
            rows = rows.float() / self.input_smooth
        w = self.int_codes().t()                                  # (K, N) int8
        if self.act_symmetric:
            qx, sx = row_codes(rows, self.act_bits)               # int8 (M, K), (M,)
            acc = int_matmul(qx, w)                               # exact int32 (M, N)
        else:
            qx, sx, zx = row_codes_asym(rows, self.act_bits)      # int8 (M, K), (M,), int32 (M,)
            acc = zero_point_matmul(qx, zx, w, self._column_sums())   # exact int32 (M, N)
        y = acc.float()
        y.mul_(sx[:, None]).mul_(self.weight_scale[None, :])      # in place: (M, N) is the big tensor
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _column_sums(self) -> torch.Tensor:
        """sum_k q_w[c, k] (N,) int32, cached while the codes are unchanged."""
        key = (self.weight_codes.data_ptr(), self.weight_codes._version)
        cached = self.__dict__.get("_colsum")
        if cached is None or cached[0] != key:
            cached = (key, self.int_codes().sum(1, dtype=torch.int32))
            self.__dict__["_colsum"] = cached
        return cached[1]

    def extra_repr(self) -> str:
        act = (f"int{self.act_bits} dynamic per row, {'symmetric' if self.act_symmetric else 'zero point'}"
               + (", smoothed" if self.smoothed else "") if self.act_bits else "float")
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight=int{self.weight_bits} per channel, activations={act}")


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_CLS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class QuantConv(_CodedWeight):
    """An N-d convolution (N = 1, 2, 3) with its weight as codes; computed in float (weight-only)."""

    def __init__(self, conv: nn.modules.conv._ConvNd, bits: int = 8):
        super().__init__()
        self.dims = len(conv.kernel_size)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, attr, getattr(conv, attr))
        self._init_codes(tuple(conv.weight.shape), bits)
        self.bias = nn.Parameter(torch.zeros(conv.out_channels)) if conv.bias is not None else None

    @classmethod
    def shell(cls, m: nn.modules.conv._ConvNd, bits: int, act_bits: int | None = None) -> "QuantConv":
        return cls(m, bits)

    def _float_twin(self) -> nn.Module:
        return _CONV_CLS[self.dims](self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                                    self.dilation, self.groups, bias=False, padding_mode=self.padding_mode,
                                    device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return _CONV_FN[self.dims](x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                                   self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"weight=int{self.weight_bits} per channel")


class QuantEmbedding(_CodedWeight):
    """A lookup table with one scale per row; only the rows looked up are unpacked."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, bits: int = 8):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self._init_codes((num_embeddings, embedding_dim), bits)

    @classmethod
    def shell(cls, m: nn.Embedding, bits: int, act_bits: int | None = None) -> "QuantEmbedding":
        return cls(m.num_embeddings, m.embedding_dim, m.padding_idx, bits)

    def _float_twin(self) -> nn.Module:
        return nn.Embedding(self.num_embeddings, self.embedding_dim, self.padding_idx, device="meta")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.weight_codes[idx]                             # (..., K) or (..., ceil(K/2)) packed
        if packed(self.weight_bits):
            rows = unpack_int4(rows, self.embedding_dim)
        return rows.float() * self.weight_scale[idx].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight=int{self.weight_bits} per row"


# float layer type -> its twin (exact types: a subclass may use its weight in ways a twin cannot,
# e.g. MultiheadAttention's out_proj, whose weight the attention reads directly)
QUANT_MODULES: dict[type, type[_CodedWeight]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv,
    nn.Conv2d: QuantConv,
    nn.Embedding: QuantEmbedding,
}
