"""Integer weights in a linearly quantized file (fx placement): codes on disk, not fp32.

The fake-quantized model (:mod:`.graph`) computes each conv/linear layer with the weight
r_hat = S (q - Z), q = clamp(round(w / S) + Z, q_min, q_max), per output channel or per tensor
(Jacob et al. 2018, section 2). Its file stores q, not the float w, in the layout of the module
swap's twins (:mod:`.qmodules`), so the weights take 1/4 (int8) or 1/8 (int4) of their fp32 bytes:

* ``<layer>.layer.weight_codes``: (C, K) int8, one code per byte (5 to 8 bits), or
  (C, ceil(K/2)) uint8, two codes per byte (2 to 4 bits: :func:`.intmath.pack_int4`, code 2j in
  the low nibble of byte j, two's complement); C = shape[0], K the product of the other dims;
* ``<layer>.layer.weight_shape``: int64 (ndim,), the weight's shape;
* ``<layer>.weight_fq.scale`` (float32) and ``.zero_point`` (int64), (C,) or (1,), as before.

Reading rebuilds the weight as S (q - Z) in float32. That is not the float weight the layer had,
but the model computes the same thing bit for bit: re-quantizing S (q - Z) gives q back (|q - Z|
<= 255, so the rounding error of the division is far below half a step), hence the same
fake-quantized weight. The writer checks exactly that for every layer and keeps the float weight
of a layer where it fails (a non-finite weight, say). A file without codes (written before this
layout, or a layer kept in float) is read as it is: ``<layer>.layer.weight`` in float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import FormatError
from .fakequant import FakeQuant
from .graph import quant_layers
from .intmath import pack_int4, packed, unpack_int4

__all__ = ["CODES_KEY", "SHAPE_KEY", "fake_quantized_weight", "weight_codes_of", "encode_weights",
           "decode_weights"]

CODES_KEY, SHAPE_KEY = "layer.weight_codes", "layer.weight_shape"   # under each quantized layer's name
_WEIGHT, _SCALE, _ZP = "layer.weight", "weight_fq.scale", "weight_fq.zero_point"
MAX_DIMS = 8


@torch.no_grad()
def fake_quantized_weight(fq: FakeQuant, w: torch.Tensor) -> torch.Tensor:
    """``fq(w)`` as the eval-mode forward computes it (no observing, no range update)."""
    saved = fq.observing, fq.training
    fq.observing, fq.training = False, False
    try:
        return fq(w).detach()
    finally:
        fq.observing, fq.training = saved


def _dequantize_rows(codes: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """S (q - Z) of (C, K) integer codes, per row when ``scale`` has C entries; float32."""
    s = scale.detach().float().reshape(-1, 1)
    z = zp.detach().float().reshape(-1, 1)
    return s * (codes.float() - z)


@torch.no_grad()
def weight_codes_of(fq: FakeQuant, w: torch.Tensor) -> torch.Tensor | None:
    """The (C, K) int8 codes q of ``w`` on ``fq``'s grid, or None when S (q - Z) would not give
    the model the same fake-quantized weight bit for bit (then the float weight is kept)."""
    if not fq.enabled or w.dtype != torch.float32 or w.dim() < 1 or w.numel() == 0:
        return None
    wq = fake_quantized_weight(fq, w)
    if not bool(torch.isfinite(wq).all()):
        return None
    rows = wq.reshape(w.shape[0], -1)
    s = fq.scale.detach().float().reshape(-1, 1)
    z = fq.zero_point.detach().reshape(-1, 1)
    q = (torch.round(rows / s) + z).clamp(fq.scheme.qmin, fq.scheme.qmax)
    if q.min() < -128 or q.max() > 127:
        return None
    q = q.to(torch.int8)
    again = fake_quantized_weight(fq, _dequantize_rows(q, fq.scale, fq.zero_point).reshape(w.shape))
    return q if torch.equal(again, wq) else None


def encode_weights(gm: nn.Module) -> dict[str, torch.Tensor]:
    """``gm``'s state dict with each quantized layer's float weight replaced by its codes (int8,
    or packed two per byte for 4 bits and fewer) and its shape; see the module docstring."""
    state = {k: v.detach() for k, v in gm.state_dict().items()}
    for name, layer in quant_layers(gm).items():
        w, fq = layer.layer.weight, layer.weight_fq
        codes = weight_codes_of(fq, w.detach())
        if codes is None or f"{name}.{_WEIGHT}" not in state:
            continue
        del state[f"{name}.{_WEIGHT}"]
        state[f"{name}.{CODES_KEY}"] = pack_int4(codes) if packed(fq.scheme.bits) else codes
        state[f"{name}.{SHAPE_KEY}"] = torch.tensor(list(w.shape), dtype=torch.int64)
    return state


def _shape_of(t: torch.Tensor, key: str, where: str) -> list[int]:
    if t.dtype != torch.int64 or t.dim() != 1 or not 1 <= t.numel() <= MAX_DIMS:
        raise FormatError(f"{where}: tensor {key!r} must be int64 with 1..{MAX_DIMS} entries (a weight's shape)")
    shape = [int(v) for v in t.tolist()]
    if min(shape) < 1:
        raise FormatError(f"{where}: tensor {key!r} holds a dimension < 1: {shape}")
    return shape


def decode_weights(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The state with every ``<layer>.layer.weight_codes`` (and its ``weight_shape``) turned back
    into ``<layer>.layer.weight`` = S (q - Z), float32; a state without codes is returned as it is.
    Every inconsistency is a FormatError naming the file and the tensor."""
    names = [k[:-len(CODES_KEY) - 1] for k in state if k.endswith("." + CODES_KEY)]
    orphans = [k for k in state if k.endswith("." + SHAPE_KEY) and k[:-len(SHAPE_KEY) - 1] not in names]
    if orphans:
        raise FormatError(f"{where}: tensor {orphans[0]!r} has no {CODES_KEY!r} beside it")
    if not names:
        return state
    out = dict(state)
    for name in names:
        ck, sk = f"{name}.{CODES_KEY}", f"{name}.{SHAPE_KEY}"
        for key in (sk, f"{name}.{_SCALE}", f"{name}.{_ZP}"):
            if key not in state:
                raise FormatError(f"{where}: tensor {ck!r} needs {key!r} beside it, the file has none")
        if f"{name}.{_WEIGHT}" in state:
            raise FormatError(f"{where}: layer {name!r} holds both a float weight and integer codes")
        codes, shape = state[ck], _shape_of(state[sk], sk, where)
        scale, zp = state[f"{name}.{_SCALE}"], state[f"{name}.{_ZP}"]
        c, k = shape[0], math.prod(shape[1:])
        cols = {torch.int8: k, torch.uint8: (k + 1) // 2}.get(codes.dtype)
        if cols is None or list(codes.shape) != [c, cols]:
            raise FormatError(f"{where}: tensor {ck!r} must be int8 {[c, k]} or packed uint8 {[c, (k + 1) // 2]} "
                              f"for a weight of shape {shape}, got {str(codes.dtype).removeprefix('torch.')} "
                              f"{list(codes.shape)}")
        if (not scale.is_floating_point() or scale.dim() != 1 or scale.numel() not in (1, c)
                or zp.is_floating_point() or list(zp.shape) != list(scale.shape)):
            raise FormatError(f"{where}: tensors '{name}.{_SCALE}' and '{name}.{_ZP}' must be a float and an "
                              f"integer vector of 1 or {c} entries, got {list(scale.shape)} and {list(zp.shape)}")
        q = unpack_int4(codes, k) if codes.dtype == torch.uint8 else codes
        out[f"{name}.{_WEIGHT}"] = _dequantize_rows(q, scale, zp).reshape(shape).contiguous()
        del out[ck], out[sk]
    return out
