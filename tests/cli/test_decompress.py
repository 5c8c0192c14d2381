"""deepshrink decompress: a .dsz back to a .safetensors model file, bit for bit; bad input is one line."""

from __future__ import annotations

import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.codec import save_compressed
from deepshrink.io import ModelInfo, load_model
from deepshrink.prune import prune_
from deepshrink.quant import KMeansConfig, kmeans_quantize_


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).contiguous().view(torch.uint8)


def test_decompress(tmp_path, capsys, run_error):
    torch.manual_seed(0)
    model = models.build("lenet300")
    prune_(model, 0.9)
    kmeans_quantize_(model, KMeansConfig(fc_bits=4, iters=3))
    save_compressed(model, tmp_path / "m.dsz", ModelInfo(arch="lenet300"))
    assert main(["decompress", str(tmp_path / "m.dsz"), "--out", str(tmp_path / "m.safetensors"), "--report"]) == 0
    out = capsys.readouterr().out
    assert "x smaller" in out and "| fc1.weight |" in out
    back, _ = load_model(tmp_path / "m.safetensors")
    want, got = model.state_dict(), back.state_dict()
    assert sorted(want) == sorted(got)
    for k, v in want.items():
        assert v.dtype == got[k].dtype and v.shape == got[k].shape and torch.equal(_bits(v), _bits(got[k])), k
    (tmp_path / "bad.dsz").write_bytes((tmp_path / "m.dsz").read_bytes()[:100])
    assert "bad.dsz" in run_error(capsys, ["decompress", tmp_path / "bad.dsz", "--out", tmp_path / "x.safetensors"])
    assert "no such file" in run_error(capsys, ["decompress", tmp_path / "none.dsz", "--out", tmp_path / "x"])
