"""Models through .dsz files: bit-exact round trips, same outputs, io/CLI integration, report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.codec import (compression_report, dumps, load_compressed, loads, read_compressed_info,
                              save_compressed)
from deepshrink.errors import ConfigError, FormatError, ModelError
from deepshrink.io import ModelInfo, load_model, read_info, save_model

from codec_helpers import decode_blob, quantize_like_kmeans, split_file

pytestmark = pytest.mark.usefixtures("one_thread")


def same_bits(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k, v in a.items():
        w = b[k]
        assert v.dtype == w.dtype and v.shape == w.shape, k
        assert torch.equal(v.reshape(-1).contiguous().view(torch.uint8), w.reshape(-1).contiguous().view(torch.uint8)), k


@pytest.mark.parametrize("arch, per_channel", [("lenet300", False), ("lenet5", False), ("lenet5", True)])
def test_kmeans_like_model_round_trips(tmp_path, arch, per_channel):
    torch.manual_seed(0)
    model = quantize_like_kmeans(models.build(arch), bits=5, sparsity=0.9, per_channel=per_channel).eval()
    info = ModelInfo(arch=arch, accuracy=0.9, history=[{"op": "compress"}])
    path = tmp_path / "m.dsz"
    save_compressed(model, path, info)
    back = load_compressed(path)
    same_bits(model.state_dict(), back.state_dict())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert back.deepshrink_info.accuracy == 0.9 and back.deepshrink_info.history == [{"op": "compress"}]
    assert all(m.weight_bits == 5 for m in back.modules() if hasattr(m, "weight_codebook"))
    assert not back.training
    assert read_compressed_info(path).arch == arch
    assert path.stat().st_size < 0.1 * sum(4 * p.numel() for p in model.parameters())


def test_pruned_shapes_and_unquantized_layers(tmp_path):
    """A pruned-smaller layer keeps its shape; a layer without codebook is stored losslessly."""
    model = models.build("lenet300")
    model.fc2 = nn.Linear(300, 64)
    model.fc3 = nn.Linear(64, 10)
    quantize_like_kmeans(model, bits=4, sparsity=0.5)
    del model.fc3.weight_codebook                           # fc3 left alone by the pipeline
    with torch.no_grad():
        model.fc3.weight.normal_()
    blob = dumps(model, ModelInfo(arch="lenet300"))
    back = loads(blob)
    assert back.fc2.out_features == 64 and back.fc3.in_features == 64
    same_bits(model.state_dict(), back.state_dict())
    kinds = {t["name"]: t["kind"] for t in split_file(blob)[0]["tensors"]}
    assert kinds["fc3.weight"] == "raw" and kinds["fc2.weight"] == "quantized" and kinds["fc3.weight_mask"] == "raw"


def test_mask_that_differs_from_the_weight_is_stored(tmp_path):
    model = quantize_like_kmeans(models.build("lenet300"), bits=3, sparsity=0.6)
    with torch.no_grad():
        model.fc1.weight[0, :5] = 0                           # zero weights where the mask keeps them
    model.fc1.weight_mask[0, :5] = True
    blob = dumps(model, ModelInfo(arch="lenet300"))
    kinds = {t["name"]: t["kind"] for t in split_file(blob)[0]["tensors"]}
    assert kinds["fc1.weight_mask"] == "raw" and kinds["fc2.weight_mask"] == "mask"
    same_bits(model.state_dict(), loads(blob).state_dict())


def test_value_not_in_codebook_and_missing_info():
    model = quantize_like_kmeans(models.build("lenet300"), bits=3)
    with torch.no_grad():
        model.fc2.weight[3, 4] = 0.123456
    with pytest.raises(ModelError, match="fc2.weight.*not in its codebook"):
        dumps(model, ModelInfo(arch="lenet300"))
    with pytest.raises(ConfigError, match="ModelInfo"):
        save_compressed(models.build("lenet300"), "/nonexistent/x.dsz")


def test_info_from_the_model_attribute(tmp_path):
    model = quantize_like_kmeans(models.build("lenet300"))
    model.deepshrink_info = ModelInfo(arch="lenet300", data="fashion-mnist")
    save_compressed(model, tmp_path / "a.dsz")
    assert read_compressed_info(tmp_path / "a.dsz").data == "fashion-mnist"


def test_code_architectures_need_trust(tmp_path):
    blob = dumps(quantize_like_kmeans(models.build("lenet300")), ModelInfo(arch="os:system", kwargs={"x": 1}))
    with pytest.raises(ModelError, match="trust_code"):
        loads(blob)


def test_io_load_model_and_read_info_open_dsz(tmp_path):
    model = quantize_like_kmeans(models.build("lenet5"), bits=4)
    path = tmp_path / "model.bin"                              # detected by magic, not suffix
    save_compressed(model, path, ModelInfo(arch="lenet5", input_shape=[1, 28, 28]))
    back, info = load_model(path)
    same_bits(model.state_dict(), back.state_dict())
    assert info.arch == "lenet5" and read_info(path).arch == "lenet5"


def test_safetensors_keep_codebooks(tmp_path):
    model = quantize_like_kmeans(models.build("lenet300"), bits=4)
    save_model(model, tmp_path / "q.safetensors", ModelInfo(arch="lenet300"))
    back, _ = load_model(tmp_path / "q.safetensors")
    same_bits(dict(sorted(model.state_dict().items())), dict(sorted(back.state_dict().items())))


def test_report_matches_hand_computation():
    model = quantize_like_kmeans(models.build("lenet300"), bits=5, sparsity=0.9)
    blob = dumps(model, ModelInfo(arch="lenet300"))
    rep = compression_report(model, ModelInfo(arch="lenet300"))
    header = split_file(blob)[0]
    fc1 = next(t for t in header["tensors"] if t["name"] == "fc1.weight")
    row = next(r for r in rep.rows if r.name == "fc1.weight")
    n, nnz = 300 * 784, int((model.fc1.weight != 0).sum())
    assert row.numel == n and row.nnz == nnz and math.isclose(row.sparsity, 1 - nnz / n)
    coded = fc1["sections"]["codes"]["length"] + sum(fc1["sections"][s]["length"] for s in ("index", "rows", "cols")
                                                     if s in fc1["sections"])
    assert math.isclose(row.rate_pqh, 1 - 8 * coded / (32 * n))
    assert math.isclose(row.weight_bits_h, 8 * fc1["sections"]["codes"]["length"] / nnz)
    assert math.isclose(row.rate_pq, 1 - fc1["plain"]["bits"] / (32 * n))
    assert row.weight_bits == 5 and row.index_bits == fc1["plain"]["index_bits"]
    assert rep.file_bytes == len(blob)
    assert rep.dense_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert math.isclose(rep.ratio, rep.dense_bytes / len(blob))
    assert rep.total.nnz == sum(int((m.weight != 0).sum()) for m in model.modules() if hasattr(m, "weight_codebook"))
    md = rep.to_markdown()
    assert md.splitlines()[0].startswith("| Layer | Sparsity | Weight Bits | Weight Bits(H) | Index Bits")
    assert "| total |" in md and rep.to_dict()["layers"][0]["layer"] == "fc1.weight"
    assert "x smaller" in rep.summary()


def test_bad_file_through_load_compressed(tmp_path):
    (tmp_path / "z.dsz").write_bytes(b"\x89DSZ\r\n\x1a\n" + b"\xff" * 12)
    with pytest.raises(FormatError, match="z.dsz"):
        load_compressed(tmp_path / "z.dsz")
    with pytest.raises(FormatError, match="z.dsz"):
        load_model(tmp_path / "z.dsz")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                                   "uint8", "bool"])
def test_raw_tensors_of_every_dtype(dtype):
    class Holder(nn.Module):
        pass

    m = Holder()
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    for i, shape in enumerate([(3, 4), (), (0,), (2, 0, 3)]):
        t = (torch.randn(shape, generator=g) * 50).to(dt) if dtype != "bool" else torch.rand(shape, generator=g) > 0.5
        m.register_buffer(f"b{i}", t)
    state = decode_blob(dumps(m, ModelInfo(arch="x")))
    same_bits(m.state_dict(), state)


def test_linear_int_codes_per_channel():
    """Per-channel linear codes: row c = scale_c * (arange(K) - zp_c), which holds an exact 0."""
    w = torch.randn(6, 20)
    scale = w.abs().amax(dim=1, keepdim=True) / 127                     # (6, 1)
    zp = torch.randint(-3, 4, (6, 1)).float()
    table = scale * (torch.arange(256).float() - 128 - zp)              # (6, 256)
    q = torch.clamp(torch.round(w / scale) + 128 + zp, 0, 255).long()
    w = table.gather(1, q)
    w[w.abs() < 0.3 * w.abs().mean()] = 0
    m = nn.Linear(20, 6)
    with torch.no_grad():
        m.weight.copy_(w)
    m.register_buffer("weight_codebook", table)
    m.weight_bits = 8
    state = decode_blob(dumps(m, ModelInfo(arch="x")))
    same_bits(m.state_dict(), state)


def test_writer_refuses_what_the_reader_would_refuse():
    m = nn.Linear(4, 2)
    m.register_buffer("weight_codebook", torch.arange(1, 70_001).float())   # K above 65536
    with torch.no_grad():
        m.weight.fill_(1.0)
    with pytest.raises(ModelError, match="cannot be stored"):
        dumps(m, ModelInfo(arch="x"))


# ------------------------------------------------------------------------- pruned layers left out of k-means

def _kinds(blob: bytes) -> dict[str, str]:
    return {t["name"]: t["kind"] for t in split_file(blob)[0]["tensors"]}


def test_pruned_but_unquantized_model_round_trips():
    """Pruning alone (no k-means): every weight raw, every mask derived from its raw weight."""
    from deepshrink.prune import prune_
    torch.manual_seed(0)
    model = models.build("lenet300").eval()
    prune_(model, 0.9, include="fc3")  # the output layer too: every layer masked
    blob = dumps(model, ModelInfo(arch="lenet300"))
    kinds = _kinds(blob)
    assert kinds["fc1.weight"] == "raw" and kinds["fc1.weight_mask"] == "mask" and kinds["fc3.weight_mask"] == "mask"
    back = loads(blob)
    same_bits(model.state_dict(), back.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))


def test_conv_layers_left_out_of_kmeans_round_trip(tmp_path):
    """`deepshrink compress --conv-bits 0`: conv weights pruned, not quantized (no codebook), fc
    layers pruned and quantized; both kinds of mask are stored as derived masks."""
    from deepshrink.prune import prune_
    from deepshrink.quant.kmeans import KMeansConfig, kmeans_quantize_
    torch.manual_seed(0)
    model = models.build("lenet5").eval()
    prune_(model, 0.8)
    assert kmeans_quantize_(model, KMeansConfig(conv_bits=0, fc_bits=4)) == {"fc1": 4, "fc2": 4}
    path = tmp_path / "m.dsz"
    save_compressed(model, path, ModelInfo(arch="lenet5"))
    kinds = _kinds(path.read_bytes())
    assert kinds["conv1.weight"] == "raw" and kinds["conv1.weight_mask"] == "mask"
    assert kinds["fc1.weight"] == "quantized" and kinds["fc1.weight_mask"] == "mask"
    back = load_compressed(path)
    same_bits(model.state_dict(), back.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))


def test_mask_stored_as_mask_only_when_every_bit_agrees():
    class Holder(nn.Module):
        pass

    m = Holder()
    w = torch.tensor([0.0, -0.0, 1.5, -2.0])
    m.register_buffer("a", w.clone())
    m.register_buffer("a_mask", torch.tensor([0.0, -0.0, 1.0, 1.0]))        # -0.0: (a != 0) gives +0.0
    m.register_buffer("b", w.clone())
    m.register_buffer("b_mask", torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float16))
    m.register_buffer("c", torch.tensor([0, 0, 1, 2]))
    m.register_buffer("c_mask", torch.tensor([False, False, True, True]))     # an integer source
    m.register_buffer("b_mask_mask", torch.tensor([False, False, True, True]))  # the source is a mask
    blob = dumps(m, ModelInfo(arch="x"))
    assert _kinds(blob) == {"a": "raw", "a_mask": "raw", "b": "raw", "b_mask": "mask", "c": "raw",
                            "c_mask": "raw", "b_mask_mask": "raw"}
    same_bits(m.state_dict(), decode_blob(blob))


def test_file_where_a_name_replaces_a_decoded_codebook_is_refused(tmp_path):
    from codec_helpers import edit_header
    model = quantize_like_kmeans(models.build("lenet300"), bits=3)
    blob = dumps(model, ModelInfo(arch="lenet300"))

    def rename(h):
        t = next(t for t in h["tensors"] if t["name"] == "fc3.bias")
        t["name"] = "fc2.weight_codebook"

    with pytest.raises(FormatError, match="fc2.weight_codebook.*taken by the codebook of quantized tensor"):
        loads(edit_header(blob, rename))
