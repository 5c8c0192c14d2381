"""Quantizer placement, PTQ, saving and loading, and quantization-aware training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError, FormatError, ModelError
from deepshrink.io import ModelInfo, save_model
from deepshrink.quant import QuantConfig, load_quantized, qat_finetune, quantize_ptq, save_quantized
from deepshrink.quant.fakequant import FakeQuant, SharedFakeQuant
from deepshrink.quant.graph import fake_quants, prepare, quant_layers
from deepshrink.quant.qat import prepare_qat
from deepshrink.train import TrainConfig, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prepare_places_quantizers(tiny_resnet):
    gm = prepare(tiny_resnet)
    kinds = [type(m).__name__ for m in gm.modules() if isinstance(m, (FakeQuant, SharedFakeQuant))]
    layers = quant_layers(gm)
    assert len(layers) == 7                                       # 6 convs + fc, BN folded away
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    # activations: input, stem, 2 blocks x (conv1, conv2, add) + the shortcut conv, fc: 10
    assert kinds.count("FakeQuant") == 7 + 10 and kinds.count("SharedFakeQuant") == 1
    assert all(layer.input_fq is not None for layer in layers.values())


def test_ptq_close_to_float(tiny_convnet, images):
    calib, x = images
    gm = quantize_ptq(tiny_convnet, calib)
    with torch.no_grad():
        ref, out = tiny_convnet(x), gm(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9


def test_calibration_from_a_loader_equals_from_a_tensor(tiny_convnet, images):
    calib, x = images
    loader = [(calib[i:i + 16], torch.zeros(16)) for i in range(0, len(calib), 16)]
    a, b = quantize_ptq(tiny_convnet, calib), quantize_ptq(tiny_convnet, loader)
    for (na, fa), (nb, fb) in zip(fake_quants(a).items(), fake_quants(b).items()):
        assert na == nb and torch.equal(fa.scale, fb.scale) and torch.equal(fa.zero_point, fb.zero_point)
    with pytest.raises(ModelError):
        quantize_ptq(tiny_convnet, [])


def test_config_checks():
    with pytest.raises(ConfigError):
        QuantConfig(weight_bits=1).check()
    with pytest.raises(ConfigError):
        QuantConfig(act_observer="histogram").check()
    with pytest.raises(ConfigError):
        QuantConfig.from_dict({"bits": 8})
    with pytest.raises(ConfigError, match="no conv/linear"):
        prepare(nn.Sequential(nn.Conv2d(1, 2, 3)), QuantConfig(layer_bits={"fc9": 4}))
    gm = prepare(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3)), QuantConfig(layer_bits={"2": 4}))
    assert quant_layers(gm)["2"].weight_fq.scheme.bits == 4 and quant_layers(gm)["0"].weight_fq.scheme.bits == 8


@pytest.fixture
def zoo_model(monkeypatch, tiny_resnet):
    """Register the tiny ResNet under a zoo name so files can rebuild it."""
    import deepshrink.models as zoo
    monkeypatch.setitem(zoo.REGISTRY, "tiny_resnet_test", lambda: type(tiny_resnet)())
    return tiny_resnet


def test_save_load_round_trip_bits(zoo_model, images, tmp_path):
    calib, x = images
    cfg = QuantConfig(weight_bits=5, per_channel=True)
    gm = quantize_ptq(zoo_model, calib, cfg)
    info = ModelInfo(arch="tiny_resnet_test", input_shape=[1, 8, 8])
    save_quantized(gm, tmp_path / "q.safetensors", info, cfg, history={"op": "quantize"})
    back, info2 = load_quantized(tmp_path / "q.safetensors")
    assert info2.extra["quant"]["config"]["weight_bits"] == 5
    with torch.no_grad():
        assert torch.equal(back(x), gm(x))
    # a pruned model: its mask buffers travel with the quantized file, zeros stay zero
    conv = zoo_model.block1.conv1
    conv.register_buffer("weight_mask", (torch.rand_like(conv.weight) > 0.5).float())
    with torch.no_grad():
        conv.weight.mul_(conv.weight_mask)
    gm = quantize_ptq(zoo_model, calib, cfg)
    save_quantized(gm, tmp_path / "p.safetensors", info, cfg)
    back, _ = load_quantized(tmp_path / "p.safetensors")
    folded = quant_layers(back)["block1.conv1"].layer
    assert torch.equal(folded.weight_mask, conv.weight_mask)
    assert (folded.weight[conv.weight_mask == 0] == 0).all()
    save_model(zoo_model, tmp_path / "float.safetensors", info)
    with pytest.raises(FormatError):
        load_quantized(tmp_path / "float.safetensors")


def test_qat_ste_trains_weights_and_tracks_their_range(tiny_convnet, make_dataset):
    ds = make_dataset(n_train=128, n_test=64, classes=5, hw=8)
    gm = prepare_qat(tiny_convnet, ds.train.x[:64], QuantConfig(weight_bits=4))
    layer = quant_layers(gm)["conv1"]
    assert layer.weight_fq.dynamic and gm.training
    out = gm(ds.train.x[:16])
    nn.functional.cross_entropy(out, ds.train.y[:16]).backward()
    assert layer.layer.weight.grad is not None and layer.layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        layer.layer.weight.mul_(2)
    gm(ds.train.x[:4])                                       # training forward re-reads the range
    amax = layer.layer.weight.detach().flatten(1).abs().amax(1)
    assert torch.allclose(layer.weight_fq.scale, amax / 7)


def test_qat_finetune_learns_and_lsq_scales_move(tiny_convnet, make_dataset):
    ds = make_dataset(n_train=256, n_test=64, classes=5, hw=8)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=False, progress=False, verbose=False, eval_every=0)
    ptq = quantize_ptq(tiny_convnet, ds.train.x[:64], QuantConfig(weight_bits=3))
    gm, _ = qat_finetune(tiny_convnet, ds, ds.train.x[:64], QuantConfig(weight_bits=3), cfg)
    assert not gm.training and evaluate(gm, ds.test) >= evaluate(ptq, ds.test)
    lsq, _ = qat_finetune(tiny_convnet, ds, ds.train.x[:64], QuantConfig(weight_bits=3), cfg, lsq=True)
    s0 = quant_layers(ptq)["fc1"].weight_fq.scale
    s1 = quant_layers(lsq)["fc1"].weight_fq.scale
    assert isinstance(s1, nn.Parameter) and not torch.allclose(s0, s1.detach())
    assert evaluate(lsq, ds.test) > evaluate(ptq, ds.test)


def test_profile_counts_quantized_layers_like_the_float_ones(tiny_convnet, images):
    """A fake-quantized layer is profiled as the conv/linear it wraps: the same MACs (BN folded
    away), its weight_bits in the size column, no rows for the quantizers inside it."""
    from deepshrink.profile import profile_model
    calib, x = images
    gm = quantize_ptq(tiny_convnet, calib)
    ref, prof = profile_model(tiny_convnet, x[:1]), profile_model(gm, x[:1])
    assert prof.totals["macs"] == ref.totals["macs"] > 0
    rows = {r.name: r for r in prof.rows}
    quant_rows = [r for r in prof.rows if r.type.startswith("QuantLayer(")]
    assert len(quant_rows) == 4 and all(r.weight_bits == 8 for r in quant_rows)
    assert not any("weight_fq" in name for name in rows)
