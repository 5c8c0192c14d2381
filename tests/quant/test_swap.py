"""Module swap: integer twins against integer and PyTorch oracles, the fx/swap dispatch, a tiny
Hugging Face BERT and a CNN fx cannot trace (both defined here), bit-exact save/load, file sizes,
and the peer ``torch.ao.quantization.quantize_dynamic`` on the same inputs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from deepshrink.errors import ConfigError, FormatError, ModelError
from deepshrink.modelfile import ModelInfo, read_safetensors, save_model
from deepshrink.names import META_KEY
from deepshrink.quant import (QuantConfig, QuantConv, QuantEmbedding, QuantLinear, load_quantized, quantize_ptq,
                              save_quantized, swap_quantize, swapped_layers)
from deepshrink.quant.intmath import unpack_int4, weight_codes

pytestmark = pytest.mark.usefixtures("one_thread")


class OddCNN(nn.Module):
    """A CNN as another package might write it: reflect padding, grouped conv, a Conv1d over the
    flattened map, and data-dependent Python that torch.fx cannot trace. Input (N, 3, 16, 16)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, groups=2)
        self.conv3 = nn.Conv1d(16, 12, 3)
        self.fc1, self.fc2 = nn.Linear(12 * 47, 32), nn.Linear(32, classes)

    def forward(self, x):
        if x.abs().amax() > 100:                              # data-dependent: no fx graph
            x = x / x.abs().amax()
        x = F.relu(self.conv2(F.relu(self.conv1(x))))         # (N, 16, 7, 7)
        x = F.relu(self.conv3(x.flatten(2)))                  # (N, 12, 47)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@pytest.fixture
def odd_cnn():
    torch.manual_seed(0)
    return OddCNN().eval()


@pytest.fixture
def pictures():
    return torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over the last dimension (per token, per image)."""
    return F.cosine_similarity(a, b, dim=-1).mean().item()


def peer_dynamic(model: nn.Module) -> nn.Module:
    """torch.ao's dynamic int8 quantization of the linear layers (per-tensor weights and activations)."""
    ao = pytest.importorskip("torch.ao.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ao.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


@pytest.mark.parametrize("bits", [8, 4])
def test_quant_linear_equals_the_integer_formula(bits):
    torch.manual_seed(1)
    lin = nn.Linear(21, 7)
    q = swap_quantize(nn.Sequential(lin), QuantConfig(weight_bits=bits, act_symmetric=True))[0]
    assert isinstance(q, QuantLinear) and q.weight_codes.dtype == (torch.uint8 if bits == 4 else torch.int8)
    x = torch.randn(3, 5, 21)
    # oracle: codes from the formulas, the sum in int64, then the two scales and the bias
    qw, sw = weight_codes(lin.weight, bits)
    assert torch.equal(q.int_codes(), qw) and torch.equal(q.weight_scale, sw)
    rows = x.reshape(-1, 21)
    sx = rows.abs().amax(1) / 127
    qx = torch.round(rows / sx[:, None]).clamp(-127, 127).long()
    acc = qx @ qw.long().t()                                  # exact integers
    want = acc.to(torch.int32).float() * sx[:, None] * sw[None, :] + lin.bias
    with torch.no_grad():
        assert torch.equal(q(x).reshape(-1, 7), want)
    assert torch.allclose(q.weight, qw.float() * sw[:, None])   # the read-only dequantized weight


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_twins_equal_the_float_layer_on_fake_quantized_weights(bits):
    torch.manual_seed(2)
    qmax = 2 ** (bits - 1) - 1
    layers = {"conv": (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="circular"),
                       torch.randn(2, 4, 9, 9)),
              "conv1d": (nn.Conv1d(3, 5, 4, dilation=2), torch.randn(2, 3, 20)),
              "emb": (nn.Embedding(11, 9, padding_idx=0), torch.tensor([[0, 3, 10], [5, 5, 1]])),
              "lin": (nn.Linear(8, 3), torch.randn(4, 8))}
    model = nn.ModuleDict({k: m for k, (m, _) in layers.items()})
    cfg = QuantConfig(weight_bits=bits, embeddings=True, dynamic_activations=False)
    q = swap_quantize(model, cfg)
    assert isinstance(q["conv"], QuantConv) and isinstance(q["emb"], QuantEmbedding)
    for name, (float_layer, x) in layers.items():
        w = float_layer.weight.detach()
        rows = w.reshape(w.shape[0], -1)
        scale = (rows.abs().amax(1) / qmax).clamp_min(1e-8)
        fq = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(w.shape[0], dtype=torch.int32), 0,
                                                    -qmax, qmax)
        ref = type(float_layer)(**_ctor(float_layer))
        ref.load_state_dict({**float_layer.state_dict(), "weight": fq})
        with torch.no_grad():
            assert torch.allclose(q[name](x), ref(x), atol=1e-5), name


def _ctor(m: nn.Module) -> dict:
    if isinstance(m, nn.Embedding):
        return {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim, "padding_idx": m.padding_idx}
    if isinstance(m, nn.Linear):
        return {"in_features": m.in_features, "out_features": m.out_features}
    return {k: getattr(m, k) for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                       "dilation", "groups", "padding_mode")}


def test_auto_traces_the_zoo_and_swaps_what_fx_cannot(tiny_convnet, images, odd_cnn, pictures):
    calib, x = images
    auto, fx_q = quantize_ptq(tiny_convnet, calib), quantize_ptq(tiny_convnet, calib, QuantConfig(method="fx"))
    assert isinstance(auto, fx.GraphModule) and not swapped_layers(auto)
    with torch.no_grad():
        assert torch.equal(auto(x), fx_q(x))                  # auto == fx exactly, as before
    with pytest.raises(ModelError, match="cannot trace OddCNN"):
        quantize_ptq(odd_cnn, pictures, QuantConfig(method="fx"))
    q = quantize_ptq(odd_cnn, pictures)
    assert not isinstance(q, fx.GraphModule)
    assert {n: type(m).__name__ for n, m in swapped_layers(q).items()} == {
        "conv1": "QuantConv", "conv2": "QuantConv", "conv3": "QuantConv", "fc1": "QuantLinear", "fc2": "QuantLinear"}
    assert all(type(m) is not nn.Linear for m in q.modules()) and type(odd_cnn.fc1) is nn.Linear   # a copy
    swapped = quantize_ptq(tiny_convnet, None, QuantConfig(method="swap"))
    assert set(swapped_layers(swapped)) == {"conv1", "conv2", "fc1", "fc2"}


def test_cnn_fidelity_and_the_peer(odd_cnn, pictures):
    with torch.no_grad():
        ref = odd_cnn(pictures)
        ours = cosine(ref, quantize_ptq(odd_cnn, pictures)(pictures))           # int8 weights, int8 activations
        int4 = cosine(ref, quantize_ptq(odd_cnn, pictures, QuantConfig(weight_bits=4))(pictures))
        peer = cosine(ref, peer_dynamic(odd_cnn)(pictures))                      # Linear only
    assert ours >= 0.9999 and int4 >= 0.995 and peer >= 0.999 and ours >= peer - 1e-5


def test_bert_swap_runs_and_stays_close(tiny_bert, token_ids):
    q = quantize_ptq(tiny_bert, token_ids)                     # auto: BertModel does not trace
    layers = swapped_layers(q)
    assert len(layers) == 13 and all(isinstance(m, QuantLinear) for m in layers.values())   # 2 x 6 + pooler
    with torch.no_grad():
        ref, out = tiny_bert(token_ids), q(token_ids)
    assert cosine(ref.last_hidden_state, out.last_hidden_state) >= 0.999
    assert cosine(ref.pooler_output, out.pooler_output) >= 0.999
    cfg = QuantConfig(weight_bits=4, embeddings=True, exclude=["pooler.*"])
    q4 = quantize_ptq(tiny_bert, None, cfg)
    assert type(q4.pooler.dense) is nn.Linear and isinstance(q4.embeddings.word_embeddings, QuantEmbedding)
    assert len(swapped_layers(q4)) == 12 + 3
    with torch.no_grad():
        assert cosine(ref.last_hidden_state, q4(token_ids).last_hidden_state) >= 0.99


def test_bert_with_larger_weights_beats_the_peer(tiny_bert, token_ids):
    """With initializer_range 0.2 the layers matter (at 0.02 the residual stream hides any error):
    per-channel weights and per-token activations lose less than per-tensor ones."""
    cfg = tiny_bert.config
    cfg.initializer_range = 0.2
    torch.manual_seed(0)
    model = type(tiny_bert)(cfg).eval()
    with torch.no_grad():
        ref = model(token_ids).last_hidden_state
        ours = cosine(ref, quantize_ptq(model, token_ids)(token_ids).last_hidden_state)
        peer = cosine(ref, peer_dynamic(model)(token_ids).last_hidden_state)
    assert ours >= 0.999 and peer >= 0.99 and 1 - ours < 1 - peer


@pytest.fixture
def registered(monkeypatch, tiny_bert, odd_cnn):
    """The test models under zoo names, so files can rebuild them."""
    import deepshrink.models as zoo
    monkeypatch.setitem(zoo.REGISTRY, "tiny_bert_test", lambda: type(tiny_bert)(tiny_bert.config))
    monkeypatch.setitem(zoo.REGISTRY, "odd_cnn_test", OddCNN)


def _sizes(model, info, path, cfg):
    save_model(model, path / "float.safetensors", info)
    q = quantize_ptq(model, None, cfg)
    save_quantized(q, path / "q.safetensors", info, cfg, history={"op": "quantize"})
    return q, (path / "float.safetensors").stat().st_size / (path / "q.safetensors").stat().st_size


@pytest.mark.parametrize("bits,ratio", [(8, 3.9), (4, 7.7)])
def test_lenet300_file_is_really_smaller_and_reloads_bit_exact(tmp_path, bits, ratio):
    from deepshrink.io import load_model
    from deepshrink.models import LeNet300
    torch.manual_seed(0)
    cfg = QuantConfig(method="swap", weight_bits=bits)
    q, r = _sizes(LeNet300().eval(), ModelInfo(arch="lenet300"), tmp_path, cfg)
    assert r >= ratio                                           # measured 3.94x and 7.75x
    stored = load_file(tmp_path / "q.safetensors")
    assert {t.dtype for k, t in stored.items() if k.endswith("weight_codes")} == {
        torch.int8 if bits == 8 else torch.uint8}
    assert not any(k.endswith(".weight") for k in stored)      # no float copy of any weight
    back, info = load_model(tmp_path / "q.safetensors")         # the dispatcher: load_quantized
    assert info.extra["quant"]["placement"] == "swap" and set(swapped_layers(back)) == set(swapped_layers(q))
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(back(x), q(x))


def test_bert_and_cnn_files_reload_bit_exact(registered, tiny_bert, token_ids, odd_cnn, pictures, tmp_path):
    cfg = QuantConfig(weight_bits=4, embeddings=True, layer_bits={"encoder.layer.0.output.dense": 8})
    q, r = _sizes(tiny_bert, ModelInfo(arch="tiny_bert_test", input_shape=[16]), tmp_path, cfg)
    assert r >= 4.5                                             # measured 4.71x: scales, LayerNorm, biases stay fp32
    back, info = load_quantized(tmp_path / "q.safetensors")
    assert info.extra["quant"]["layers"]["encoder.layer.0.output.dense"] == 8 and info.extra["quant"]["act_bits"] == 8
    assert back.encoder.layer[0].output.dense.weight_codes.dtype == torch.int8
    with torch.no_grad():
        a, b = q(token_ids), back(token_ids)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(a.pooler_output, b.pooler_output)
    cfg = QuantConfig(dynamic_activations=False)                # weight-only: float activations
    q, r = _sizes(odd_cnn, ModelInfo(arch="odd_cnn_test", input_shape=[3, 16, 16]), tmp_path, cfg)
    back, info = load_quantized(tmp_path / "q.safetensors")
    assert info.extra["quant"]["act_bits"] is None and back.fc1.act_bits is None
    with torch.no_grad():
        assert torch.equal(back(pictures), q(pictures))


def _rewrite_quant_record(path, **changes):
    tensors, info = read_safetensors(path)
    info.extra["quant"].update(changes)
    save_file(tensors, path, metadata={META_KEY: info.to_json()})


def test_bad_swap_records_are_one_line_errors(registered, odd_cnn, tmp_path):
    path = tmp_path / "q.safetensors"
    save_quantized(quantize_ptq(odd_cnn, None, QuantConfig(method="swap")), path,
                   ModelInfo(arch="odd_cnn_test", input_shape=[3, 16, 16]), QuantConfig(method="swap"))
    _rewrite_quant_record(path, layers={"fc1": 8, "fc9": 8})
    with pytest.raises(ModelError, match="'fc9' is not in the architecture"):
        load_quantized(path)
    _rewrite_quant_record(path, layers={"fc1": 12})
    with pytest.raises(FormatError, match="extra.quant.layers"):
        load_quantized(path)
    _rewrite_quant_record(path, layers={"fc1": 8}, act_bits=16)
    with pytest.raises(FormatError, match="act_bits"):
        load_quantized(path)
    _rewrite_quant_record(path, placement="onnx")
    with pytest.raises(FormatError, match="placement"):
        load_quantized(path)


def test_config_checks_and_refusals(tiny_bert, odd_cnn, pictures, make_dataset):
    with pytest.raises(ConfigError, match="method"):
        QuantConfig(method="graph").check()
    with pytest.raises(ConfigError, match="exclude"):
        QuantConfig(exclude="pooler.*").check()
    with pytest.raises(ConfigError, match="true or false"):
        QuantConfig.from_dict({"embeddings": "yes"}).check()
    with pytest.raises(ConfigError, match="layer_bits names no layer"):
        swap_quantize(odd_cnn, QuantConfig(layer_bits={"embeddings.word_embeddings": 4}))
    with pytest.raises(ConfigError, match=r"exclude globs match no layer: \['fc3'\]"):
        swap_quantize(odd_cnn, QuantConfig(exclude=["fc3"]))
    with pytest.raises(ConfigError, match="symmetric"):
        swap_quantize(odd_cnn, QuantConfig(weight_symmetric=False))
    with pytest.raises(ConfigError, match="max_norm"):
        swap_quantize(nn.Sequential(nn.Embedding(5, 3, max_norm=1.0)), QuantConfig(embeddings=True))
    from deepshrink.quant import export_qdq, qat_finetune
    with pytest.raises(ConfigError, match="fx placement"):
        qat_finetune(odd_cnn, make_dataset(), pictures, QuantConfig(method="swap"))
    with pytest.raises(ModelError, match="no QDQ export"):
        export_qdq(swap_quantize(odd_cnn), "never.onnx", [3, 16, 16])
    with pytest.raises(ConfigError, match="calibration inputs"):
        quantize_ptq(nn.Sequential(nn.Linear(3, 2)), None, QuantConfig(method="fx"))


def test_profile_counts_swapped_layers_like_the_float_ones(tiny_bert, token_ids):
    from deepshrink.profile import profile_model
    q = quantize_ptq(tiny_bert, None, QuantConfig(weight_bits=4, embeddings=True))
    ref, prof = profile_model(tiny_bert, token_ids[:1]), profile_model(q, token_ids[:1])
    assert prof.totals["params"] == ref.totals["params"] > 0 and prof.totals["macs"] == ref.totals["macs"] > 0
    rows = [r for r in prof.rows if r.type.startswith("Quant")]
    assert len(rows) == 16 and all(r.weight_bits == 4 and r.known for r in rows)
    assert prof.totals["bytes"] < ref.totals["bytes"] / 5
    pooler = next(r for r in prof.rows if r.name == "pooler.dense")
    assert pooler.params == 32 * 32 + 32 and pooler.bits == 32 * 32 * 4 + 32 * 32 and pooler.macs == 32 * 32


def test_int4_codes_unpack_to_the_weight_codes(tiny_bert):
    q = swap_quantize(tiny_bert, QuantConfig(weight_bits=4, embeddings=True))
    emb = q.embeddings.word_embeddings
    codes, scale = weight_codes(tiny_bert.embeddings.word_embeddings.weight, 4)
    assert emb.weight_codes.shape == (100, 16) and torch.equal(unpack_int4(emb.weight_codes, 32), codes)
    assert torch.equal(emb.weight_scale, scale)
