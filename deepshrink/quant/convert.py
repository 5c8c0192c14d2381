"""From the fake-quantized fx model to integer twins: the real int8 path in PyTorch.

``deepshrink quantize`` writes a traceable model in the fx placement (:mod:`.graph`): the file
holds integer codes (:mod:`.storage`), but the loaded model computes with fake quantization in
fp32, a simulation of the integer arithmetic that runs slower than the float model.
:func:`to_swap` turns it into the module-swap form (:mod:`.swap`, :mod:`.qmodules`): each
conv/linear layer becomes its twin holding *the same* integer codes and scales (int8, or int4
packed two per byte, in memory too), and every activation quantizer is dropped:

* linear layers quantize their input per row at run time (``act_bits``, symmetric) and multiply
  int8 x int8 into int32 with ``torch._int_mm`` (an exact float64 matmul where it does not run);
* convolutions dequantize their weight to fp32 at each call (weight-only quantization).

So the weights are exactly the file's, but the activations no longer sit on the calibrated static
grids: the outputs differ from the fake-quantized model's by activation rounding (about as much
as the fake-quantized model differs from the float one). For integer kernels everywhere (int8
convolutions included) export the file to ONNX (``deepshrink export FILE --out OUT.onnx``: a QDQ
graph that ONNX Runtime fuses into QLinearConv / QGemm) or use :class:`.integer.IntegerModel`,
the integer-only reference engine (exact integer arithmetic, slow).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .fakequant import FakeQuant, SharedFakeQuant
from .graph import quant_layers
from .intmath import pack_int4, packed
from .qmodules import QUANT_MODULES
from .storage import weight_codes_of

__all__ = ["to_swap"]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def to_swap(gm: nn.Module, act_bits: int | None = 8) -> nn.Module:
    """A copy of the fake-quantized ``gm`` (eval mode) whose conv/linear layers are integer twins
    holding its weight codes and scales; ``act_bits``: the linear layers' dynamic activation bits
    (2..8), None for float activations (weight-only). Symmetric weight grids only (zero point 0,
    the default): a twin's codes are symmetric."""
    if act_bits is not None and not (type(act_bits) is int and 2 <= act_bits <= 8):
        raise ConfigError(f"act_bits must be None or an integer in 2..8, got {act_bits!r}")
    layers = quant_layers(gm)
    if not layers:
        raise ModelError("to_swap needs a fake-quantized model (deepshrink.quant.quantize_ptq with the fx "
                         "placement, or a linearly quantized file); this one has no quantized layer")
    out = copy.deepcopy(gm).eval()
    for name, layer in quant_layers(out).items():
        fq, inner = layer.weight_fq, layer.layer
        if bool(fq.zero_point.any()):
            raise ConfigError(f"layer {name!r}: asymmetric weight grid (zero point != 0); the integer twins "
                              "hold symmetric codes (quantize with weight_symmetric=True)")
        codes = weight_codes_of(fq, inner.weight.detach())
        if codes is None or type(inner) not in QUANT_MODULES:
            raise ModelError(f"layer {name!r}: its fake-quantized weight has no integer codes (a disabled "
                             "quantizer or a non-finite weight)")
        bits = fq.scheme.bits
        twin = QUANT_MODULES[type(inner)].shell(inner, bits, act_bits)
        twin.weight_codes.copy_(pack_int4(codes) if packed(bits) else codes)
        twin.weight_scale.copy_(fq.scale.detach().float().expand(codes.shape[0]))
        bias = layer.quantized_bias()
        if twin.bias is not None and bias is not None:
            twin.bias.data.copy_(bias.detach())
        _set(out, name, twin)
    for name, m in list(out.named_modules()):
        if isinstance(m, (FakeQuant, SharedFakeQuant)) and name:
            _set(out, name, nn.Identity())
    return out
