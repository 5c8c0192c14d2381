"""deepshrink profile: per-layer costs as a table or JSON, the file's bytes beside the model's size, a
simulated latency labelled as such; bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.codec import save_compressed
from deepshrink.io import ModelInfo
from deepshrink.prune import prune_
from deepshrink.quant import KMeansConfig, QuantConfig, kmeans_quantize_, quantize_ptq, save_quantized


def test_cli_profile_json(capsys):
    assert main(["profile", "--model", "lenet5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    t = out["totals"]
    for key in ("params", "nonzero_params", "macs", "memory_accesses", "bytes"):
        assert key in t
    assert t["params"] == 431_080
    assert t["macs"] == 2_293_000
    assert out["model"] == "lenet5"


def test_cli_profile_missing_file(capsys, tmp_path):
    code = main(["profile", str(tmp_path / "missing.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepshrink: error:")


def test_cli_profile_bad_shape(capsys):
    assert main(["profile", "--model", "lenet5", "--input-shape", "1,1,5,5"]) == 2
    assert capsys.readouterr().err.startswith("deepshrink: error:")



@pytest.fixture(scope="module")
def quantized_lenet5(tmp_path_factory):
    """A fake-quantized (fx) lenet5, int8, written as a linearly quantized file; random weights."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("profile")
    model, cfg = models.build("lenet5").eval(), QuantConfig(weight_bits=8)
    save_quantized(quantize_ptq(model, torch.randn(16, 1, 28, 28), cfg), root / "q8.safetensors",
                   ModelInfo(arch="lenet5"), cfg)
    return root / "q8.safetensors"


def test_cli_profile_labels_a_simulated_latency_and_shows_the_file_bytes(quantized_lenet5, capsys):
    size = quantized_lenet5.stat().st_size
    assert main(["profile", str(quantized_lenet5), "--latency", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"file on disk {size:,} B" in out and "model size 432,820 B" in out   # 430,500 int8 weights, 580 fp32 biases
    latency = next(line for line in out.splitlines() if line.startswith("latency"))
    assert latency.endswith("threads: simulated int8 (fake-quant in fp32)")
    assert "to_swap" in out                                       # how to get the real int8 model
    assert main(["profile", str(quantized_lenet5), "--latency", "--threads", "1", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["size"]["file_bytes"] == size and got["size"]["model_bytes"] == got["totals"]["bytes"] == 432_820
    assert "disk" in got["size"]["file_bytes_means"] and "bit width" in got["size"]["model_bytes_means"]
    assert got["latency"]["simulated"] is True
    assert got["latency"]["compute"] == got["compute"] == "simulated int8 (fake-quant in fp32)"


def test_cli_profile_reports_each_file_s_own_bytes_beside_the_model_s(tmp_path, capsys):
    """The same pruned, shared weights as a .dsz and as the safetensors decompressed from it."""
    torch.manual_seed(0)
    model = models.build("lenet300")
    prune_(model, 0.9)
    kmeans_quantize_(model, KMeansConfig(fc_bits=4, iters=3))
    save_compressed(model, tmp_path / "m.dsz", ModelInfo(arch="lenet300"))
    assert main(["decompress", str(tmp_path / "m.dsz"), "--out", str(tmp_path / "m.safetensors")]) == 0
    capsys.readouterr()
    seen = {}
    for name in ("m.dsz", "m.safetensors"):
        assert main(["profile", str(tmp_path / name), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["size"]["file_bytes"] == (tmp_path / name).stat().st_size
        assert got["compute"] == "fp32" and "latency" not in got
        seen[name] = got["size"]
    assert seen["m.dsz"]["file_bytes"] < seen["m.dsz"]["model_bytes"] / 4     # sparse, entropy-coded
    assert main(["profile", "--model", "lenet300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"]["file_bytes"] is None   # no file: a zoo model
