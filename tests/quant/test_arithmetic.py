"""The arithmetic a model runs, in words: what ``profile --latency`` prints beside a timing."""

from __future__ import annotations

import pytest

import deepshrink.quant.arithmetic as arith
from deepshrink.quant import QuantConfig, quantize_ptq, swap_quantize, to_swap
from deepshrink.quant.arithmetic import arithmetic

pytestmark = pytest.mark.usefixtures("one_thread")


def test_float_and_fake_quantized_models(tiny_convnet, images):
    assert arithmetic(tiny_convnet) == arith.Arithmetic("fp32", False)
    assert arithmetic(tiny_convnet.double()).label == "fp64"
    tiny_convnet.float()
    gm = quantize_ptq(tiny_convnet, images[0])
    assert arithmetic(gm) == arith.Arithmetic("simulated int8 (fake-quant in fp32)", True)
    gm = quantize_ptq(tiny_convnet, images[0], QuantConfig(weight_bits=4, layer_bits={"fc2": 8}))
    assert arithmetic(gm).label == "simulated int4/int8 weights, int8 activations (fake-quant in fp32)"


def test_integer_twins(tiny_convnet, images, monkeypatch):
    real = to_swap(quantize_ptq(tiny_convnet, images[0]))
    monkeypatch.setattr(arith, "int_mm_native", lambda: True)             # torch._int_mm runs (CPU torch >= 2.x)
    how = arithmetic(real)
    assert not how.simulated and "torch._int_mm" in how.label and "convolutions: int8 weights dequantized" in how.label
    monkeypatch.setattr(arith, "int_mm_native", lambda: False)            # no int8 kernel: emulated
    how = arithmetic(real)
    assert how.simulated and "float64" in how.label
    weight_only = swap_quantize(tiny_convnet, QuantConfig(method="swap", weight_bits=4, dynamic_activations=False))
    how = arithmetic(weight_only)
    assert not how.simulated and "int8 x" not in how.label
    assert "convolutions" in how.label and "linear layers (float inputs)" in how.label and "int4" in how.label
