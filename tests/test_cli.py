"""deepshrink.cli: train / evaluate / models end to end, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.io import read_info

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_cli_model):
    """One tiny training run through the CLI, shared by the tests below."""
    return train_cli_model(tmp_path_factory.mktemp("cli"), "x.safetensors")


# ----------------------------------------------------------------------------- happy paths

def test_train_writes_model_file(trained):
    root, spec, out = trained
    assert out.is_file()
    info = read_info(out)
    assert info.arch == "lenet300"
    assert info.kwargs["num_classes"] == 10 and info.kwargs["in_features"] == 784
    assert info.input_shape == [1, 28, 28]
    assert info.data == spec
    assert 0.0 <= info.accuracy <= 1.0
    assert info.mean is not None and info.std is not None
    assert info.history and info.history[0]["op"] == "train"
    assert info.history[0]["config"]["epochs"] == 1
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


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


def test_models_command_in_subprocess():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "deepshrink", "models"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in models.names():
        assert name in proc.stdout


# ----------------------------------------------------------------------------- errors

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


@pytest.mark.parametrize("kwargs", ["{bad json", "[1, 2]", '{"no_such_argument": 1}'])
def test_error_bad_kwargs(trained, capsys, tmp_path, kwargs, run_error):
    _, spec, _ = trained
    out = tmp_path / "k.safetensors"
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", spec, "--kwargs", kwargs,
                              "--epochs", "1", "--no-progress", "--out", out])
    assert "--kwargs" in line or "argument" in line
    assert not out.exists()


def test_error_unknown_model(trained, capsys, tmp_path, run_error):
    _, spec, _ = trained
    out = tmp_path / "u.safetensors"
    line = run_error(capsys, ["train", "--model", "nosuchnet", "--data", spec, "--epochs", "1",
                              "--no-progress", "--out", out])
    assert "nosuchnet" in line
    assert not out.exists()


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
