"""deepshrink sensitivity end to end through the CLI, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepshrink.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("one_thread")


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_sensitivity_command(trained, tmp_path, capsys):
    _, _, model_file = trained
    out_dir = tmp_path / "scan"
    capsys.readouterr()
    code = main(["sensitivity", str(model_file), "--out-dir", str(out_dir), "--sparsities", "0.5,0.9",
                 "--no-progress", "--val-size", "32"])
    assert code == 0
    scan = json.loads((out_dir / "sensitivity.json").read_text())
    assert scan["sparsities"] == [0.5, 0.9]
    assert set(scan["layers"]) == {"fc1.weight", "fc2.weight"}  # fc3, the output layer, is no default target
    assert scan["layers"]["fc1.weight"]["params"] == 784 * 300
    assert all(len(v["accuracy"]) == 2 for v in scan["layers"].values())
    assert "32" in scan["evaluated_on"] and "validation" in scan["evaluated_on"]
    assert scan["split"] == "validation" and scan["val_images"] == 32
    assert is_png(out_dir / "sensitivity.png")
    text = capsys.readouterr().out
    assert "accuracy (%) on the validation split" in text and "dense model:" in text and "fc1.weight" in text


def test_sensitivity_error_missing_file(capsys, tmp_path, run_error):
    line = run_error(capsys, ["sensitivity", tmp_path / "gone.safetensors", "--out-dir", tmp_path / "s"])
    assert "gone.safetensors" in line


def test_sensitivity_error_bad_grid(trained, capsys, tmp_path, run_error):
    _, _, model_file = trained
    line = run_error(capsys, ["sensitivity", model_file, "--out-dir", tmp_path / "s", "--sparsities", "0.5,abc",
                              "--no-progress", "--val-size", "32"])
    assert "--sparsities" in line


def test_sensitivity_include_exclude(trained, tmp_path, capsys, run_error):
    _, _, model_file = trained
    out_dir = tmp_path / "scan_globs"
    assert main(["sensitivity", str(model_file), "--out-dir", str(out_dir), "--sparsities", "0.5", "--no-progress",
                 "--val-size", "16", "--include", "fc3", "--exclude", "fc1.weight"]) == 0
    assert list(json.loads((out_dir / "sensitivity.json").read_text())["layers"]) == ["fc2.weight", "fc3.weight"]
    line = run_error(capsys, ["sensitivity", model_file, "--out-dir", tmp_path / "s2", "--no-progress",
                              "--include", "fc9"])
    assert "include glob 'fc9'" in line
