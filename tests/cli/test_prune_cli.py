"""deepshrink sensitivity / prune end to end through the CLI, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model, read_info
from deepshrink.prune import get_masks, prunable_weights, sparsity

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    root = tmp_path_factory.mktemp("prune_cli")
    spec = write_npz(root / "tiny.npz")
    out = root / "dense.safetensors"
    code = main(["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    return root, spec, out


def run_error(capsys, argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepshrink: error: ")
    assert "Traceback" not in err
    return lines[0]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_sensitivity_command(trained, tmp_path, capsys):
    _, _, model_file = trained
    out_dir = tmp_path / "scan"
    capsys.readouterr()
    code = main(["sensitivity", str(model_file), "--out-dir", str(out_dir), "--sparsities", "0.5,0.9",
                 "--no-progress", "--eval-size", "32"])
    assert code == 0
    scan = json.loads((out_dir / "sensitivity.json").read_text())
    assert scan["sparsities"] == [0.5, 0.9]
    assert set(scan["layers"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert scan["layers"]["fc1.weight"]["params"] == 784 * 300
    assert all(len(v["accuracy"]) == 2 for v in scan["layers"].values())
    assert "32" in scan["evaluated_on"]
    assert is_png(out_dir / "sensitivity.png")
    text = capsys.readouterr().out
    assert "dense accuracy" in text and "fc1.weight" in text


def test_prune_command(trained, tmp_path, capsys):
    _, _, model_file = trained
    out = tmp_path / "pruned.safetensors"
    plots = tmp_path / "plots"
    code = main(["prune", str(model_file), "--sparsity", "0.9", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(out), "--plots", str(plots)])
    assert code == 0
    assert is_png(plots / "weights_all.png") and is_png(plots / "weights_nonzero.png")
    capsys.readouterr()
    assert main(["profile", str(out), "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["totals"]["sparsity"] >= 0.89
    rows = {r["name"]: r for r in prof["rows"]}
    assert rows["fc1"]["sparsity"] >= 0.89
    # the file keeps its masks and records what was done
    model, info = load_model(out)
    assert set(get_masks(model)) == set(prunable_weights(model))
    assert sparsity(model) == pytest.approx(0.9, abs=1e-4)
    assert info.history[-1]["op"] == "prune"
    assert info.history[-1]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert read_info(out).accuracy == info.accuracy


def test_prune_auto(trained, tmp_path):
    _, _, model_file = trained
    out = tmp_path / "auto.safetensors"
    plots = tmp_path / "auto_plots"
    code = main(["prune", str(model_file), "--sparsity", "0.8", "--auto", "--finetune-epochs", "1",
                 "--no-progress", "--eval-size", "32", "--out", str(out),
                 "--plots", str(plots)])
    assert code == 0
    assert is_png(plots / "sensitivity.png") and (plots / "sensitivity.json").is_file()
    model, info = load_model(out)
    chosen = info.history[-1]["config"]["sparsity"]
    assert isinstance(chosen, dict) and set(chosen) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    n = {k: w.numel() for k, w in prunable_weights(model).items()}
    assert sum(chosen[k] * n[k] for k in n) / sum(n.values()) == pytest.approx(0.8, abs=1e-9)
    assert sparsity(model) == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_prune_error_bad_sparsity(trained, capsys, tmp_path, value):
    _, _, model_file = trained
    out = tmp_path / "bad.safetensors"
    line = run_error(capsys, ["prune", model_file, "--sparsity", value, "--no-progress", "--out", out])
    assert "--sparsity" in line
    assert not out.exists()


def test_prune_error_missing_file(capsys, tmp_path):
    out = tmp_path / "x.safetensors"
    line = run_error(capsys, ["prune", tmp_path / "missing.safetensors", "--sparsity", "0.5", "--no-progress",
                              "--out", out])
    assert "missing.safetensors" in line
    assert not out.exists()


def test_sensitivity_error_missing_file(capsys, tmp_path):
    line = run_error(capsys, ["sensitivity", tmp_path / "gone.safetensors", "--out-dir", tmp_path / "s"])
    assert "gone.safetensors" in line


def test_sensitivity_error_bad_grid(trained, capsys, tmp_path):
    _, _, model_file = trained
    line = run_error(capsys, ["sensitivity", model_file, "--out-dir", tmp_path / "s", "--sparsities", "0.5,abc",
                              "--no-progress", "--eval-size", "32"])
    assert "--sparsities" in line


def test_prune_remove_dead_round_trip(trained, tmp_path, capsys):
    """Shrunk layers and their masks survive the file: the loaded model predicts the same."""
    root, spec, model_file = trained
    out = tmp_path / "shrunk.safetensors"
    code = main(["prune", str(model_file), "--sparsity", "0.98", "--schedule", "oneshot", "--finetune-epochs", "0",
                 "--remove-dead", "--no-progress", "--out", str(out)])
    assert code == 0
    model, info = load_model(out)
    removed = info.history[-1]["dead_removed"]
    assert removed.get("fc2", 0) >= 80  # fc3 keeps 20 of its 1,000 weights: most fc2 units lost their output
    assert model.fc2.out_features == 100 - removed["fc2"] == model.fc3.in_features
    for name, mask in get_masks(model).items():
        assert mask.shape == prunable_weights(model)[name].shape
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(info.accuracy, abs=1e-6)
