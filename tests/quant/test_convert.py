"""``to_swap``: a fake-quantized (fx) model, or a linearly quantized file, as integer twins holding
the file's own codes and scales; linear layers through the int8 GEMM; refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink.quant.qmodules as qmodules
from deepshrink.errors import ConfigError, ModelError
from deepshrink.io import load_model
from deepshrink.modelfile import ModelInfo
from deepshrink.quant import (QuantConfig, QuantConv, QuantLinear, quantize_ptq, save_quantized, swapped_layers,
                              to_swap)
from deepshrink.quant.fakequant import FakeQuant, SharedFakeQuant
from deepshrink.quant.graph import quant_layers
from deepshrink.quant.storage import CODES_KEY, encode_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def registered(monkeypatch, tiny_resnet):
    import deepshrink.models as zoo
    monkeypatch.setitem(zoo.REGISTRY, "tiny_resnet_convert_test", lambda: type(tiny_resnet)())
    return tiny_resnet


@pytest.mark.parametrize("bits", [8, 4])
def test_twins_hold_the_file_s_codes_and_stay_close(registered, images, tmp_path, bits):
    calib, x = images
    cfg = QuantConfig(weight_bits=bits)
    gm = quantize_ptq(registered, calib, cfg)
    save_quantized(gm, tmp_path / "q.safetensors", ModelInfo(arch="tiny_resnet_convert_test", input_shape=[1, 8, 8]),
                   cfg)
    loaded, _ = load_model(tmp_path / "q.safetensors")
    real = to_swap(loaded)
    twins, stored = swapped_layers(real), encode_weights(gm)
    assert set(twins) == set(quant_layers(gm)) and len(twins) == 7          # 6 convs and the fc
    for name, twin in twins.items():
        assert torch.equal(twin.weight_codes, stored[f"{name}.{CODES_KEY}"]), name   # the same bytes as the file
        assert torch.equal(twin.weight_scale, stored[f"{name}.weight_fq.scale"])
    assert isinstance(twins["fc"], QuantLinear) and twins["fc"].act_bits == 8
    assert isinstance(twins["block1.conv1"], QuantConv)
    assert not any(isinstance(m, (FakeQuant, SharedFakeQuant)) for m in real.modules())
    assert quant_layers(loaded)                                            # the input model is left as it was
    with torch.no_grad():
        ref, sim, out = registered(x), gm(x), real(x)
    # activations are no longer on the calibrated grids: as far from the simulation as it is from fp32
    assert (out - sim).abs().max() <= 2 * (sim - ref).abs().max() + 1e-6
    assert (out.argmax(1) == sim.argmax(1)).float().mean() >= 0.9


def test_linear_layers_run_the_integer_gemm(tiny_convnet, images, monkeypatch):
    calib, x = images
    real = to_swap(quantize_ptq(tiny_convnet, calib, QuantConfig()))
    calls = []
    exact = qmodules.int_matmul

    def counted(a, b):
        calls.append((a.dtype, b.dtype))
        return exact(a, b)

    monkeypatch.setattr(qmodules, "int_matmul", counted)
    with torch.no_grad():
        real(x)
    assert calls == [(torch.int8, torch.int8)] * 2                         # fc1, fc2
    weight_only = to_swap(quantize_ptq(tiny_convnet, calib, QuantConfig()), act_bits=None)
    calls.clear()
    with torch.no_grad():
        weight_only(x)
    assert calls == [] and weight_only.fc1.act_bits is None


def test_refusals(tiny_convnet, images):
    with pytest.raises(ModelError, match="no quantized layer"):
        to_swap(tiny_convnet)
    asym = quantize_ptq(tiny_convnet, images[0], QuantConfig(weight_symmetric=False))
    with pytest.raises(ConfigError, match="asymmetric"):
        to_swap(asym)
    with pytest.raises(ConfigError, match="act_bits"):
        to_swap(quantize_ptq(tiny_convnet, images[0]), act_bits=12)
    assert isinstance(tiny_convnet.fc1, nn.Linear)
