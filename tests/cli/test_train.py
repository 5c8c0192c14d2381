"""deepshrink train end to end, and its one-line errors."""

from __future__ import annotations

import pytest

from deepshrink.io import read_info

pytestmark = pytest.mark.usefixtures("one_thread")


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
