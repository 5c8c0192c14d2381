"""``deepshrink conv-table FILE``: on a small CNN defined here (not from the zoo; a plain state dict
opened with ``--model module:callable``), one row per conv layer and algorithm, ``--json`` one
object, and bad input one error line. Timings are never asserted, only present and positive."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink.cli import main
from deepshrink.convalgo import NAMES

pytestmark = pytest.mark.usefixtures("one_thread")


def build(width: int = 4) -> nn.Module:
    """Three conv layers on 1x28x28 images: a 3x3 (Winograd applies), a strided 5x5, a grouped 1x1."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 5, stride=2), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 1, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * width, 3))


ARCH = f"{__name__}:build"
LAYERS = ["0", "2", "4"]
FAST = ["--repeats", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("convtable") / "cnn.pt"
    torch.save(build(width=4).state_dict(), path)
    return [str(path), "--model", ARCH, "--kwargs", json.dumps({"width": 4})]


def test_prints_a_row_per_conv_layer_and_algorithm(plain, capsys):
    capsys.readouterr()
    assert main(["conv-table", *plain, *FAST]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if ": input " in line and "-> output" in line]
    assert [h.split(":")[0] for h in heads] == LAYERS
    assert "0: input 1x1x28x28, weight 4x1x3x3, stride 1x1, padding 1x1" in out
    assert "4: input 1x4x12x12, weight 8x2x1x1, stride 1x1, padding 0x0, dilation 1x1, groups 2" in out
    blocks = out.split("\n\n")[1:1 + len(LAYERS)]
    for block in blocks:
        rows = [line.split()[0] for line in block.splitlines()[3:]]
        assert rows == list(NAMES), block
    assert out.count("unsupported: F(2x2, 3x3) needs a 3x3 kernel") == 2     # the 5x5 and the 1x1
    assert "summary over 3 conv layers:" in out and "columns: max_abs_error:" in out


def test_json_is_one_object_with_every_layer_and_algorithm(plain, capsys):
    capsys.readouterr()
    assert main(["conv-table", *plain, *FAST, "--batch-size", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    rec = json.loads(out)
    assert rec["input_shape"] == [2, 1, 28, 28] and rec["repeats"] == 1 and rec["threads"] == 1
    assert [layer["name"] for layer in rec["layers"]] == LAYERS
    for layer in rec["layers"]:
        assert [r["algorithm"] for r in layer["rows"]] == list(NAMES)
        assert layer["reference"]["time_ms"] > 0
        for r in layer["rows"]:
            if r["supported"]:
                assert r["max_abs_error"] < 1e-3 and r["time_ms"] > 0
                assert r["workspace_measured"] == r["workspace_predicted"]
            else:
                assert r["algorithm"] == "winograd" and r["reason"] and r["time_ms"] is None
    assert rec["summary"]["direct"]["workspace_equal"] == 3 and rec["summary"]["winograd"]["run"] == 1
    assert set(rec["means"]) == {"max_abs_error", "workspace_predicted", "workspace_measured", "time_ms"}


def test_bad_input_is_one_error_line(plain, tmp_path, capsys, run_error):
    line = run_error(capsys, ["conv-table", str(tmp_path / "missing.safetensors")])
    assert "missing.safetensors" in line
    assert "--batch-size 0: must be >= 1" in run_error(capsys, ["conv-table", *plain, "--batch-size", "0"])
    assert "--repeats 0: must be >= 1" in run_error(capsys, ["conv-table", *plain, "--repeats", "0"])
