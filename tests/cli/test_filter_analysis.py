"""deepshrink filter-analysis: on a conv net defined here (a plain state dict opened with --model), the
JSON and one PNG per analysis written, a table per analysis printed, --json one object; bad ratios,
unknown analyses and a model without conv layers are one error line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def build(classes: int = 4) -> nn.Module:
    """Two conv layers with BatchNorm and a linear classifier, for 1x8x8 images."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 16, classes))


def mlp(classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, classes))


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_npz):
    root = tmp_path_factory.mktemp("filters")
    spec = write_npz(root / "tiny.npz", n_train=160, n_test=40, hw=8, classes=4)
    torch.manual_seed(0)
    torch.save(build().state_dict(), root / "convnet.pt")
    torch.save(mlp().state_dict(), root / "mlp.pt")
    return root, spec


def _argv(root, spec, name="convnet", arch="build"):
    return [str(root / f"{name}.pt"), "--model", f"{__name__}:{arch}", "--data", spec, "--no-progress"]


def test_filter_analysis_writes_the_json_and_the_plots(files, tmp_path, capsys):
    root, spec = files
    out = tmp_path / "fa"
    code = main(["filter-analysis", *_argv(root, spec), "--out-dir", str(out), "--ratios", "0,0.5",
                 "--retrain-epochs", "1", "--random-draws", "2", "--val-size", "20"])
    printed = capsys.readouterr().out
    assert code == 0
    for title in ("sensitivity: each conv layer", "retrained 1 epoch(s)", "norms:", "greedy:", "selection:",
                  "sorting:"):
        assert title in printed
    report = json.loads((out / "filter_analysis.json").read_text())
    assert report["split"] == "validation" and report["val_images"] == 20
    assert list(report["analyses"]) == ["sensitivity", "norms", "greedy", "selection", "sorting"]
    for layer in report["analyses"]["sensitivity"]["layers"].values():
        assert layer["accuracy"][0] == report["dense"]
    for name in ("sensitivity", "sensitivity_retrained", "norms", "greedy", "selection", "sorting"):
        assert (out / f"filter_{name}.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    code = main(["filter-analysis", *_argv(root, spec), "--out-dir", str(tmp_path / "js"), "--ratios", "0.5",
                 "--analyses", "norms,sorting", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["command"] == "filter-analysis" and list(obj["analyses"]) == ["norms", "sorting"]
    assert sorted(p.name for p in (tmp_path / "js").iterdir()) == ["filter_analysis.json", "filter_norms.png",
                                                                   "filter_sorting.png"]


def test_bad_input_is_one_error_line(files, tmp_path, capsys, run_error):
    root, spec = files
    out = ["--out-dir", str(tmp_path / "bad")]
    assert "[0, 1)" in run_error(capsys, ["filter-analysis", *_argv(root, spec), *out, "--ratios", "0.5,1.0"])
    assert "--ratios" in run_error(capsys, ["filter-analysis", *_argv(root, spec), *out, "--ratios", "1.5"])
    line = run_error(capsys, ["filter-analysis", *_argv(root, spec), *out, "--analyses", "norms,pruning"])
    assert "pruning" in line and "sensitivity" in line
    line = run_error(capsys, ["filter-analysis", *_argv(root, spec, "mlp", "mlp"), *out, "--ratios", "0.5"])
    assert "no convolution layer" in line
    assert "--random-draws" in run_error(capsys, ["filter-analysis", *_argv(root, spec), *out, "--random-draws", "0"])
    assert "--val-size" in run_error(capsys, ["filter-analysis", *_argv(root, spec), *out, "--val-size", "0"])
    assert not (tmp_path / "bad").exists()
