"""deepshrink prune end to end through the CLI (masks, --auto, --remove-dead, a teacher), and its
one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepshrink.cli import main
from deepshrink.io import load_model, read_info
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
