"""deepshrink prune end to end through the CLI (masks, --auto, --remove-dead, a teacher), and its
one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deepshrink.cli import main
from deepshrink.io import ModelInfo, load_model, read_info, save_model
from deepshrink.prune import get_masks, prunable_weights, sparsity

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("one_thread")


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


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
                 "--no-progress", "--val-size", "32", "--out", str(out),
                 "--plots", str(plots)])
    assert code == 0
    assert is_png(plots / "sensitivity.png") and (plots / "sensitivity.json").is_file()
    model, info = load_model(out)
    chosen = info.history[-1]["config"]["sparsity"]
    # fc3, the output layer, is no default target: neither scanned nor pruned
    assert isinstance(chosen, dict) and set(chosen) == {"fc1.weight", "fc2.weight"}
    n = {k: w.numel() for k, w in prunable_weights(model).items()}
    assert sum(chosen[k] * n[k] for k in n) / sum(n.values()) == pytest.approx(0.8, abs=1e-9)
    assert sparsity(model) == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_prune_error_bad_sparsity(trained, capsys, tmp_path, value, run_error):
    _, _, model_file = trained
    out = tmp_path / "bad.safetensors"
    line = run_error(capsys, ["prune", model_file, "--sparsity", value, "--no-progress", "--out", out])
    assert "--sparsity" in line
    assert not out.exists()


def test_prune_error_missing_file(capsys, tmp_path, run_error):
    out = tmp_path / "x.safetensors"
    line = run_error(capsys, ["prune", tmp_path / "missing.safetensors", "--sparsity", "0.5", "--no-progress",
                              "--out", out])
    assert "missing.safetensors" in line
    assert not out.exists()


def test_prune_remove_dead_round_trip(trained, tmp_path, capsys):
    """Shrunk layers and their masks survive the file: the loaded model predicts the same."""
    root, spec, model_file = trained
    out = tmp_path / "shrunk.safetensors"
    code = main(["prune", str(model_file), "--sparsity", "0.98", "--schedule", "oneshot", "--finetune-epochs", "0",
                 "--scope", "layer", "--remove-dead", "--include", "fc3", "--no-progress", "--out", str(out)])
    assert code == 0
    model, info = load_model(out)
    removed = info.history[-1]["dead_removed"]
    assert removed.get("fc2", 0) >= 80  # fc3 keeps 20 of its 1,000 weights: most fc2 units lost their output
    assert model.fc2.out_features == 100 - removed["fc2"] == model.fc3.in_features
    for name, mask in get_masks(model).items():
        assert mask.shape == model.get_submodule(name.rpartition(".")[0]).weight.shape
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(info.accuracy, abs=1e-6)


def test_error_auto_with_global_scope(trained, tmp_path, capsys, run_error):
    _, _, model_file = trained
    line = run_error(capsys, ["prune", model_file, "--sparsity", "0.5", "--auto", "--scope", "global",
                              "--no-progress", "--out", tmp_path / "x.safetensors"])
    assert "--auto" in line and "--scope global" in line
    assert not (tmp_path / "x.safetensors").exists()


def test_prune_with_another_model_as_teacher(trained, tmp_path, capsys):
    _, _, model_file = trained
    out = tmp_path / "kd.safetensors"
    capsys.readouterr()
    code = main(["prune", str(model_file), "--sparsity", "0.9", "--scope", "global", "--finetune-epochs", "1",
                 "--teacher", str(model_file), "--kd-temperature", "2", "--kd-alpha", "0.5", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "teacher" in text and "logits cached" in text  # the CLI model trains without augmentation
    model, info = load_model(out)
    entry = info.history[-1]
    assert entry["teacher"] == str(model_file)
    assert entry["config"]["kd_temperature"] == 2.0 and entry["config"]["kd_alpha"] == 0.5
    assert sparsity(model) == pytest.approx(0.9, abs=1e-4)


@pytest.mark.parametrize("extra,needle", [
    (["--distill", "--teacher", "TEACHER"], "not both"),
    (["--teacher", "TEACHER", "--kd-alpha", "1.5"], "alpha"),
    (["--teacher", "TEACHER", "--kd-temperature", "0"], "temperature"),
])
def test_prune_teacher_errors(trained, tmp_path, capsys, run_error, extra, needle):
    _, _, model_file = trained
    extra = [str(model_file) if e == "TEACHER" else e for e in extra]
    line = run_error(capsys, ["prune", model_file, "--sparsity", "0.5", "--no-progress",
                              "--out", tmp_path / "x.safetensors", *extra])
    assert needle in line
    assert not (tmp_path / "x.safetensors").exists()


# ----------------------------------------------------------------------------- --include / --exclude

def build_user_cnn(num_classes: int = 4) -> nn.Module:
    """A user's CNN (no zoo entry): conv -> BN -> conv -> pool -> Linear head."""
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


@pytest.fixture(scope="module")
def user_cnn(tmp_path_factory, write_npz):
    root = tmp_path_factory.mktemp("user_cnn")
    spec = write_npz(root / "tiny.npz", n_train=96, n_test=32, hw=8, classes=4)
    torch.manual_seed(0)
    src = root / "cnn.safetensors"
    save_model(build_user_cnn(), src, ModelInfo(arch=f"{__name__}:build_user_cnn", kwargs={"num_classes": 4},
                                                input_shape=[1, 8, 8], mean=[0.4], std=[0.3], data=spec))
    return src


def test_prune_user_cnn_defaults_leave_the_head(user_cnn, tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    capsys.readouterr()
    assert main(["prune", str(user_cnn), "--sparsity", "0.5", "--schedule", "oneshot", "--finetune-epochs", "0",
                 "--trust-code", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "left dense (no pruning target; --include adds one): 7.weight" in text
    assert "total sparsity 50.00% (over the pruned weights)" in text
    model, _ = load_model(out, trust_code=True)
    assert set(get_masks(model)) == {"0.weight", "3.weight"}
    dense, _ = load_model(user_cnn, trust_code=True)
    assert torch.equal(model[7].weight, dense[7].weight) and torch.equal(model[1].weight, dense[1].weight)


def test_prune_include_and_exclude_flags(user_cnn, tmp_path):
    out = tmp_path / "p.safetensors"
    assert main(["prune", str(user_cnn), "--sparsity", "0.5", "--schedule", "oneshot", "--finetune-epochs", "1",
                 "--include", "7", "--exclude", "0.*", "--trust-code", "--no-progress", "--out", str(out)]) == 0
    model, info = load_model(out, trust_code=True)
    assert set(get_masks(model)) == {"3.weight", "7.weight"}
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    entry = info.history[-1]
    assert entry["config"]["include"] == ["7"] and entry["config"]["exclude"] == ["0.*"]
    assert set(entry["layers"]) == {"3.weight", "7.weight"}


def test_prune_auto_scans_the_included_head(user_cnn, tmp_path):
    out = tmp_path / "auto.safetensors"
    assert main(["prune", str(user_cnn), "--sparsity", "0.6", "--auto", "--finetune-epochs", "0", "--val-size", "16",
                 "--include", "7", "--trust-code", "--no-progress", "--out", str(out)]) == 0
    _, info = load_model(out, trust_code=True)
    assert set(info.history[-1]["config"]["sparsity"]) == {"0.weight", "3.weight", "7.weight"}


@pytest.mark.parametrize("flag,glob", [("--include", "clasifier"), ("--exclude", "fc9.*")])
def test_prune_glob_matching_nothing_is_one_line(trained, tmp_path, capsys, run_error, flag, glob):
    _, _, model_file = trained
    out = tmp_path / "x.safetensors"
    line = run_error(capsys, ["prune", model_file, "--sparsity", "0.5", "--auto", "--no-progress", flag, glob,
                              "--out", out])
    assert f"{flag[2:]} glob '{glob}' matches no weight" in line and "fc1.weight" in line
    assert not out.exists() and not (tmp_path / "sensitivity").exists()  # refused before the scan
