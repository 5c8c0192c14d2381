"""deepshrink.cli: train / evaluate / models end to end, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.io import read_info

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_npz(path: Path, n_train=256, n_test=64, hw=28, classes=10, seed=0) -> str:
    """Learnable tiny images: a class-dependent bright square plus noise."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 80, (n, hw, hw)).astype(np.uint8)
        for i, c in enumerate(y):
            r = (c * 2) % (hw - 4)
            x[i, r:r + 4, r:r + 4] = 255
        return x, y.astype(np.uint8)

    xs, ys = split(n_train)
    xt, yt = split(n_test)
    np.savez(path, x_train=xs, y_train=ys, x_test=xt, y_test=yt)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("cli")
    spec = write_npz(root / "tiny.npz")
    out = root / "x.safetensors"
    code = main(["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    return root, spec, out


def run_error(capsys, argv) -> str:
    """Run the CLI expecting a user error: exit 2, one stderr line, no traceback."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepshrink: error: ")
    assert "Traceback" not in err
    return lines[0]


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

def test_error_missing_file(capsys, tmp_path):
    line = run_error(capsys, ["evaluate", tmp_path / "missing.safetensors"])
    assert "missing.safetensors" in line


def test_error_bad_data_spec(trained, capsys):
    _, _, out = trained
    line = run_error(capsys, ["evaluate", out, "--data", "no-such-dataset"])
    assert "no-such-dataset" in line


def test_error_missing_npz(trained, capsys, tmp_path):
    _, _, out = trained
    line = run_error(capsys, ["evaluate", out, "--data", f"npz:{tmp_path / 'gone.npz'}"])
    assert "gone.npz" in line


@pytest.mark.parametrize("kwargs", ["{bad json", "[1, 2]", '{"no_such_argument": 1}'])
def test_error_bad_kwargs(trained, capsys, tmp_path, kwargs):
    _, spec, _ = trained
    out = tmp_path / "k.safetensors"
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", spec, "--kwargs", kwargs,
                              "--epochs", "1", "--no-progress", "--out", out])
    assert "--kwargs" in line or "argument" in line
    assert not out.exists()


def test_error_unknown_model(trained, capsys, tmp_path):
    _, spec, _ = trained
    out = tmp_path / "u.safetensors"
    line = run_error(capsys, ["train", "--model", "nosuchnet", "--data", spec, "--epochs", "1",
                              "--no-progress", "--out", out])
    assert "nosuchnet" in line
    assert not out.exists()


def test_error_wrong_image_shape(trained, capsys, tmp_path):
    _, _, out = trained
    small = write_npz(tmp_path / "small.npz", n_train=32, n_test=16, hw=8)
    line = run_error(capsys, ["evaluate", out, "--data", small])
    assert "[1, 8, 8]" in line and "[1, 28, 28]" in line


def test_error_plain_state_dict_without_model(capsys, tmp_path):
    pt = tmp_path / "plain.pt"
    torch.save(models.build("lenet300").state_dict(), pt)
    line = run_error(capsys, ["evaluate", pt])
    assert "--model" in line


def test_error_pickle_with_code(capsys, tmp_path):
    pt = tmp_path / "evil.pt"
    torch.save({"fc1.weight": torch.zeros(1), "hook": os.getcwd}, pt)
    line = run_error(capsys, ["evaluate", pt, "--model", "lenet300"])
    assert "evil.pt" in line
