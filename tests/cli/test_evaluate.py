"""deepshrink evaluate end to end, and one-line errors with exit code 2 for bad model files and data."""

from __future__ import annotations

import json
import os

import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.io import read_info

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluate_json(trained, capsys):
    _, spec, out = trained
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    stdout = capsys.readouterr().out
    rec = json.loads(stdout)
    assert 0.0 <= rec["accuracy"] <= 1.0
    assert rec["images"] == 64
    assert rec["data"] == spec
    # the same normalisation as in training: the same accuracy as the file records
    assert rec["accuracy"] == pytest.approx(read_info(out).accuracy, abs=1e-6)


def test_evaluate_with_data_option(trained, capsys):
    root, spec, out = trained
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", spec]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "64 images" in text


def test_evaluate_plain_state_dict_with_model(trained, capsys, tmp_path):
    root, spec, out = trained
    pt = tmp_path / "plain.pt"
    torch.save(models.build("lenet300").state_dict(), pt)
    capsys.readouterr()
    assert main(["evaluate", str(pt), "--model", "lenet300", "--data", spec, "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0


def test_error_missing_file(capsys, tmp_path, run_error):
    line = run_error(capsys, ["evaluate", tmp_path / "missing.safetensors"])
    assert "missing.safetensors" in line


def test_error_bad_data_spec(trained, capsys, run_error):
    _, _, out = trained
    line = run_error(capsys, ["evaluate", out, "--data", "no-such-dataset"])
    assert "no-such-dataset" in line


def test_error_missing_npz(trained, capsys, tmp_path, run_error):
    _, _, out = trained
    line = run_error(capsys, ["evaluate", out, "--data", f"npz:{tmp_path / 'gone.npz'}"])
    assert "gone.npz" in line


def test_error_wrong_image_shape(trained, capsys, tmp_path, run_error, write_npz):
    _, _, out = trained
    small = write_npz(tmp_path / "small.npz", n_train=32, n_test=16, hw=8)
    line = run_error(capsys, ["evaluate", out, "--data", small])
    assert "[1, 8, 8]" in line and "[1, 28, 28]" in line


def test_error_plain_state_dict_without_model(capsys, tmp_path, run_error):
    pt = tmp_path / "plain.pt"
    torch.save(models.build("lenet300").state_dict(), pt)
    line = run_error(capsys, ["evaluate", pt])
    assert "--model" in line


def test_error_pickle_with_code(capsys, tmp_path, run_error):
    pt = tmp_path / "evil.pt"
    torch.save({"fc1.weight": torch.zeros(1), "hook": os.getcwd}, pt)
    line = run_error(capsys, ["evaluate", pt, "--model", "lenet300"])
    assert "evil.pt" in line
