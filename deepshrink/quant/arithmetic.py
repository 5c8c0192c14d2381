"""What arithmetic a model's forward pass really runs, in words: fp32, simulated integers
(fake quantization computed in fp32), or integer weights in the module-swap twins.

A timing means different things for each: a fake-quantized model (:mod:`.graph`, what
``deepshrink quantize`` writes for a traceable model) rounds every weight and activation to its
integer grid and computes in fp32, so it is *slower* than the float model and says nothing about
int8 kernels; the module-swap twins (:mod:`.qmodules`) hold integer codes, and their linear
layers multiply int8 by int8 into int32 (``torch._int_mm`` where it runs) while convolutions and
embeddings dequantize their weights to fp32. ``deepshrink profile --latency`` prints this label
beside the timing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .fakequant import FakeQuant
from .graph import quant_layers
from .intmath import int_mm_native
from .qmodules import QuantConv, QuantEmbedding, QuantLinear
from .swap import swapped_layers

__all__ = ["Arithmetic", "arithmetic"]

_KINDS = {QuantConv: "convolutions", QuantEmbedding: "embeddings", QuantLinear: "linear layers (float inputs)"}
_FLOAT_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


@dataclass(frozen=True)
class Arithmetic:
    label: str              # e.g. "simulated int8 (fake-quant in fp32)"
    simulated: bool         # True: integer arithmetic simulated in floating point (fake quantization, or
                            # an int8 GEMM emulated where torch._int_mm does not run)


def _ints(bits) -> str:
    return "/".join(f"int{b}" for b in sorted(bits))


def arithmetic(model: nn.Module) -> Arithmetic:
    """How ``model`` computes (see the module docstring)."""
    layers = quant_layers(model)
    weight_fqs = {id(layer.weight_fq) for layer in layers.values()}
    on = [m for m in model.modules() if isinstance(m, FakeQuant) and m.enabled]
    if on:
        wbits = {m.scheme.bits for m in on if id(m) in weight_fqs}
        abits = {m.scheme.bits for m in on if id(m) not in weight_fqs}
        what = (_ints(wbits) if wbits == abits or not abits else
                f"{_ints(wbits)} weights, {_ints(abits)} activations" if wbits else f"{_ints(abits)} activations")
        return Arithmetic(f"simulated {what} (fake-quant in fp32)", True)
    swapped = swapped_layers(model)
    if swapped:
        gemm = [m for m in swapped.values() if isinstance(m, QuantLinear) and m.act_bits is not None]
        rest = [m for m in swapped.values() if m not in gemm]
        parts = []
        if gemm:
            how = "torch._int_mm" if int_mm_native() else "an exact float64 matmul: no int8 kernel on this machine"
            parts.append(f"linear layers int8 x {_ints({m.weight_bits for m in gemm})} -> int32 ({how})")
        if rest:
            kinds = sorted({_KINDS.get(type(m), type(m).__name__) for m in rest})
            parts.append(f"{', '.join(kinds)}: {_ints({m.weight_bits for m in rest})} weights dequantized to fp32 "
                         "at each call")
        # weight-only layers are a real deployment scheme; an int8 GEMM without its kernel is emulated
        return Arithmetic("integer weights, module swap: " + "; ".join(parts), bool(gemm) and not int_mm_native())
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    name = "/".join(sorted(_FLOAT_NAMES.get(d, str(d).removeprefix("torch.")) for d in dtypes)) or "fp32"
    return Arithmetic(name, False)
