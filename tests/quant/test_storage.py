"""fx-quantized files hold integer codes: int8 one per byte, int4 two per byte, with their scales
and zero points; the file shrinks 4x / 8x, the codes equal the linear-quantization formula, the
loader rebuilds the same model bit for bit, an older fp32 file still loads, bad codes are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from deepshrink.errors import FormatError
from deepshrink.io import load_model
from deepshrink.modelfile import ModelInfo, read_safetensors, save_model, save_state
from deepshrink.quant import QuantConfig, load_quantized, quantize_ptq, save_quantized
from deepshrink.quant.graph import quant_layers
from deepshrink.quant.intmath import unpack_int4
from deepshrink.quant.linear import quantize
from deepshrink.quant.qat import prepare_qat, refresh_weight_quantizers
from deepshrink.quant.storage import CODES_KEY, SHAPE_KEY, decode_weights, encode_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class WideConvNet(nn.Module):
    """A small conv net whose bytes are its weights (~35k): conv-BN-ReLU x2 with pooling, two linear
    layers; input (N, 1, 8, 8)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def wide(monkeypatch, randomise_bn):
    """The net under a zoo name (files rebuild it), seeded, random BN statistics, eval mode."""
    import deepshrink.models as zoo
    monkeypatch.setitem(zoo.REGISTRY, "wide_conv_test", WideConvNet)
    torch.manual_seed(0)
    return randomise_bn(WideConvNet(), 7), ModelInfo(arch="wide_conv_test", input_shape=[1, 8, 8])


def _write(gm, info, cfg, path):
    save_quantized(gm, path, info, cfg, history={"op": "quantize"})
    return path.stat().st_size


@pytest.mark.parametrize("bits,per_channel,limit", [(8, True, 0.35), (8, False, 0.35), (4, True, 0.2),
                                                    (4, False, 0.2)])
def test_file_is_4x_or_8x_smaller_than_fp32(wide, images, tmp_path, bits, per_channel, limit):
    model, info = wide
    save_model(model, tmp_path / "fp32.safetensors", info)
    cfg = QuantConfig(weight_bits=bits, per_channel=per_channel)
    size = _write(quantize_ptq(model, images[0], cfg), info, cfg, tmp_path / "q.safetensors")
    ratio = size / (tmp_path / "fp32.safetensors").stat().st_size
    assert ratio < limit                  # measured 0.284 / 0.270 (int8), 0.162 / 0.149 (int4; per channel / tensor)
    stored = load_file(tmp_path / "q.safetensors")
    codes = {k: t for k, t in stored.items() if k.endswith(CODES_KEY)}
    assert len(codes) == 4 and {t.dtype for t in codes.values()} == {torch.int8 if bits == 8 else torch.uint8}
    assert not any(k.endswith(".layer.weight") for k in stored)      # no float copy of any weight
    w = stored["features.4.layer.weight_shape"]
    assert w.tolist() == [64, 32, 3, 3] and codes[f"features.4.{CODES_KEY}"].shape == (64, 288 if bits == 8 else 144)


@pytest.mark.parametrize("bits", [8, 5, 4, 3, 2])
def test_codes_are_the_quantization_formula(wide, images, bits):
    """Oracle: q = clamp(round(w / S) + Z, q_min, q_max) of the folded float weight (linear.quantize)."""
    model, _ = wide
    gm = quantize_ptq(model, images[0], QuantConfig(weight_bits=bits, weight_symmetric=bits != 3))
    state = encode_weights(gm)
    for name, layer in quant_layers(gm).items():
        fq, w = layer.weight_fq, layer.layer.weight.detach()
        oracle = quantize(w, fq.scale, fq.zero_point, fq.scheme.qmin, fq.scheme.qmax, axis=0).reshape(w.shape[0], -1)
        stored = state[f"{name}.{CODES_KEY}"]
        q = unpack_int4(stored, oracle.shape[1]) if stored.dtype == torch.uint8 else stored
        assert torch.equal(q.long(), oracle), name
        assert (stored.dtype == torch.uint8) == (bits <= 4)


@pytest.mark.parametrize("cfg", [QuantConfig(weight_bits=8), QuantConfig(weight_bits=4, per_channel=False),
                                 QuantConfig(weight_bits=6, weight_symmetric=False, weight_observer="mse"),
                                 QuantConfig(weight_bits=3, act_bits=6, layer_bits={"head.3": 8})],
                         ids=["int8", "int4-per-tensor", "int6-asymmetric-mse", "int3-mixed"])
def test_round_trip_is_bit_exact(wide, images, tmp_path, cfg):
    model, info = wide
    calib, x = images
    gm = quantize_ptq(model, calib, cfg)
    _write(gm, info, cfg, tmp_path / "q.safetensors")
    back, info2 = load_model(tmp_path / "q.safetensors")                  # the dispatcher: load_quantized
    assert info2.extra["quant"]["config"] == cfg.to_dict()
    with torch.no_grad():
        assert torch.equal(back(x), gm(x))
    for name, layer in quant_layers(back).items():               # the same grids, the same quantized weights
        ref = quant_layers(gm)[name]
        assert torch.equal(layer.weight_fq.scale, ref.weight_fq.scale)
        with torch.no_grad():
            assert torch.equal(layer.weight_fq(layer.layer.weight), ref.weight_fq(ref.layer.weight))


@pytest.mark.parametrize("lsq", [False, True], ids=["ste", "lsq"])
def test_qat_models_round_trip_bit_exact(wide, images, make_dataset, tmp_path, lsq):
    """After training steps the weights sit off the grid (STE) or the steps are learnt (LSQ)."""
    model, info = wide
    ds = make_dataset(n_train=64, n_test=16, classes=5, hw=8)
    cfg = QuantConfig(weight_bits=4)
    gm = prepare_qat(model, images[0], cfg, lsq=lsq)
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    for i in range(3):
        nn.functional.cross_entropy(gm(ds.train.x[i * 16:(i + 1) * 16]), ds.train.y[i * 16:(i + 1) * 16]).backward()
        opt.step()
        opt.zero_grad()
    refresh_weight_quantizers(gm)
    gm.eval()
    _write(gm, info, cfg, tmp_path / "q.safetensors")
    back, _ = load_quantized(tmp_path / "q.safetensors")
    with torch.no_grad():
        assert torch.equal(back(images[1]), gm(images[1]))


def test_an_fp32_file_of_the_older_layout_still_loads(wide, images, tmp_path):
    model, info = wide
    calib, x = images
    cfg = QuantConfig(weight_bits=4)
    gm = quantize_ptq(model, calib, cfg)
    _write(gm, info, cfg, tmp_path / "new.safetensors")
    _, new_info = read_safetensors(tmp_path / "new.safetensors")
    save_state(gm.state_dict(), tmp_path / "old.safetensors", new_info)   # float weights, as written before
    assert any(k.endswith(".layer.weight") for k in load_file(tmp_path / "old.safetensors"))
    old, _ = load_model(tmp_path / "old.safetensors")
    new, _ = load_model(tmp_path / "new.safetensors")
    with torch.no_grad():
        assert torch.equal(old(x), gm(x)) and torch.equal(new(x), gm(x))
    assert (tmp_path / "new.safetensors").stat().st_size < 0.2 * (tmp_path / "old.safetensors").stat().st_size


def test_a_layer_whose_codes_would_not_be_exact_keeps_its_float_weight(wide, images, tmp_path):
    model, info = wide
    gm = quantize_ptq(model, images[0], QuantConfig())
    quant_layers(gm)["head.1"].weight_fq.enabled = False      # computes with its float weight: nothing to code
    state = encode_weights(gm)
    assert "head.1.layer.weight" in state and f"head.1.{CODES_KEY}" not in state
    assert f"head.3.{CODES_KEY}" in state
    decoded = decode_weights(state, "mem")
    assert torch.equal(decoded["head.1.layer.weight"], quant_layers(gm)["head.1"].layer.weight.detach())


def _tamper(path, out, changes: dict):
    """A copy of the file with tensors replaced (None: removed)."""
    state, info = read_safetensors(path)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    save_state(state, out, info)
    return out


C, S = f"features.4.{CODES_KEY}", f"features.4.{SHAPE_KEY}"


@pytest.mark.parametrize("changes,match", [
    ({C: torch.zeros(64, 100, dtype=torch.int8)}, "must be int8"),
    ({C: torch.zeros(64, 288)}, "must be int8"),
    ({S: None}, "needs"),
    ({S: torch.tensor([64, 0, 3, 3])}, "dimension < 1"),
    ({S: torch.tensor([64.0, 32, 3, 3])}, "must be int64"),
    ({"features.4.weight_fq.scale": torch.ones(3)}, "scale"),
    ({"features.4.layer.weight": torch.zeros(64, 32, 3, 3)}, "both"),
    ({C: None}, f"no '{CODES_KEY}'"),
], ids=["codes-shape", "codes-dtype", "no-shape", "zero-dim", "float-shape", "scale", "both", "orphan-shape"])
def test_bad_codes_are_one_format_error_naming_the_tensor(wide, images, tmp_path, changes, match):
    model, info = wide
    cfg = QuantConfig()
    _write(quantize_ptq(model, images[0], cfg), info, cfg, tmp_path / "q.safetensors")
    bad = _tamper(tmp_path / "q.safetensors", tmp_path / "bad.safetensors", changes)
    with pytest.raises(FormatError, match=match) as err:
        load_model(bad)
    assert "bad.safetensors" in str(err.value) and "features.4" in str(err.value)
