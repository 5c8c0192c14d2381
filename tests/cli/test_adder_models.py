"""lenet5_adder through the CLI: train (with a model argument), reload, profile (adds only)."""

from __future__ import annotations

import json

import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_reload_and_profile_lenet5_adder(tmp_path, write_npz, capsys):
    spec = write_npz(tmp_path / "tiny.npz", n_train=128, n_test=32)
    out = tmp_path / "adder.safetensors"
    assert main(["train", "--model", "lenet5_adder", "--kwargs", '{"eta": 0.2}', "--data", spec,
                 "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)]) == 0
    model, info = load_model(out)
    assert info.arch == "lenet5_adder" and info.kwargs["eta"] == 0.2
    assert model.conv2.eta == 0.2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    capsys.readouterr()
    assert main(["profile", str(out), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["macs"] == 500 * 10 and totals["additions"] > 2 * 2_288_000
