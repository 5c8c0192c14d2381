"""Bring your own model, honestly: a CNN defined here (no zoo entry, no recorded training) saved
as a plain model file and opened with ``--trust-code``, on a tiny npz data set of 200 images.

* every command that fine-tunes gets no augmentation by default (the model records no recipe
  asking for it) and obeys ``--augment on|off``;
* the commands that choose (``compress``, ``sensitivity``, ``prune --auto``) choose on the
  validation split carved from the training images, fine-tune on the others, and label which
  split each printed number comes from; ``--val-size`` is checked before any work.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import deepshrink.train as train_mod
from deepshrink.cli import main
from deepshrink.codec import read_compressed_info
from deepshrink.io import ModelInfo, read_info, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN = 200


def build_cnn(num_classes: int = 4, in_channels: int = 1) -> nn.Module:
    """The user's own model: not in the zoo, built by ``module:callable``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


ARCH = f"{__name__}:build_cnn"


@pytest.fixture(scope="module")
def byo(tmp_path_factory, write_npz):
    """``(model file, npz spec, the same model recording a training that augmented)``: the CNN with
    random weights; the first file has no training history."""
    root = tmp_path_factory.mktemp("byo")
    spec = write_npz(root / "tiny.npz", n_train=N_TRAIN, n_test=40, hw=8, classes=4)
    torch.manual_seed(0)
    model = build_cnn()
    info = dict(arch=ARCH, kwargs={"num_classes": 4}, input_shape=[1, 8, 8], mean=[0.4], std=[0.3], data=spec)
    src, recorded = root / "byo.safetensors", root / "augmented.safetensors"
    save_model(model, src, ModelInfo(**info))
    save_model(model, recorded, ModelInfo(**info, history=[{"op": "train", "config": {"lr": 0.05, "augment": True}}]))
    assert read_info(src).train_config() == {}          # a third-party model: nothing recorded
    return src, spec, recorded


@pytest.fixture
def training_runs(monkeypatch):
    """``[(augment, training images)]`` of every training epoch any command runs."""
    runs = []
    real = train_mod.iterate_batches

    def spy(split, *a, **k):
        if k.get("shuffle"):
            runs.append((k.get("augment", False), len(split)))
        return real(split, *a, **k)

    monkeypatch.setattr(train_mod, "iterate_batches", spy)
    return runs


COMMANDS = {  # name -> argv after the command, {src} and {out} filled in
    "prune": ["prune", "{src}", "--out", "{out}", "--sparsity", "0.5", "--finetune-epochs", "1"],
    "prune-channels": ["prune-channels", "{src}", "--out", "{out}", "--ratio", "0.25", "--finetune-epochs", "1"],
    "quantize-kmeans": ["quantize", "{src}", "--out", "{out}", "--method", "kmeans", "--qat-epochs", "1"],
    "quantize-qat": ["quantize", "{src}", "--out", "{out}", "--qat-epochs", "1", "--calib", "32"],
    "compress": ["compress", "{src}", "--out", "{out}.dsz", "--allocation", "global", "--sparsity", "0.5",
                 "--prune-epochs", "1", "--attempts", "1", "--max-drop", "100", "--val-size", "20"],
    "distill": ["distill", "--teacher", "{src}", "--student", "{src}", "--out", "{out}", "--epochs", "1"],
}


def _argv(name: str, src, out) -> list[str]:
    return [a.format(src=src, out=out) for a in COMMANDS[name]] + ["--trust-code", "--no-progress"]


@pytest.mark.parametrize("recorded,augment,expected", [
    (False, None, False),   # no recorded training: no augmentation
    (False, "on", True),
    (True, None, True),     # the model's own recipe augmented: so does its fine-tuning
    (True, "off", False),
], ids=["no-record", "no-record-on", "recorded", "recorded-off"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_augmentation_only_when_asked(byo, tmp_path, training_runs, capsys, name, recorded, augment, expected):
    src = byo[2] if recorded else byo[0]
    argv = _argv(name, src, tmp_path / "out.safetensors") + ([] if augment is None else ["--augment", augment])
    assert main(argv) == 0, capsys.readouterr().err
    assert training_runs, "the command fine-tuned nothing"
    assert {a for a, _ in training_runs} == {expected}
    held_out = 20 if name == "compress" else 0                  # compress trains on the images val leaves
    assert {n for _, n in training_runs} == {N_TRAIN - held_out}


@pytest.mark.parametrize("flags,expected", [([], True), (["--augment", "off"], False), (["--no-augment"], False),
                                            (["--augment", "on"], True)])
def test_train_augments_as_its_recipe_unless_told(byo, tmp_path, training_runs, flags, expected):
    _, spec, _ = byo
    out = tmp_path / "t.safetensors"
    assert main(["train", "--model", ARCH, "--data", spec, "--epochs", "1", "--no-progress", "--out", str(out),
                 *flags]) == 0
    assert {a for a, _ in training_runs} == {expected}
    assert read_info(out).train_config()["augment"] is expected   # recorded: later fine-tuning follows it


def test_compress_chooses_on_validation_and_labels_every_number(byo, tmp_path, training_runs, capsys):
    src = byo[0]
    out = tmp_path / "c.dsz"
    assert main(["compress", str(src), "--out", str(out), "--sparsity", "0.5", "--prune-epochs", "1",
                 "--allocation", "sensitivity", "--attempts", "1", "--max-drop", "100", "--val-size", "30",
                 "--trust-code", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "validation accuracy" in text and "the validation split (30 images held out" in text
    assert "test accuracy" in text and "reported only" in text
    assert "val acc" in text and "test acc " not in text        # the fine-tunings' epoch lines: validation
    assert {n for _, n in training_runs} == {N_TRAIN - 30}      # the val images never reach the fine-tuning
    entry = read_compressed_info(out).history[-1]
    assert entry["op"] == "compress" and entry["budget_on"] == "validation"
    assert entry["accuracy_on"] == "the test split (40 images)" and "30 images" in entry["val_on"]
    assert entry["scan_on"] == entry["val_on"] and entry["config"]["val_size"] == 30
    assert {"val_accuracy_before", "val_accuracy_after", "accuracy_before", "accuracy_after"} <= set(entry)
    report = (tmp_path / "c.report.md").read_text()
    assert "accuracy on the test split (40 images)" in report and "reported once" in report
    assert "accuracy on the validation split (30 images" in report and "val drop (pp)" in report


def test_prune_auto_and_sensitivity_scan_on_validation(byo, tmp_path, training_runs):
    src = byo[0]
    out = tmp_path / "p.safetensors"
    assert main(["prune", str(src), "--out", str(out), "--sparsity", "0.5", "--auto", "--val-size", "25",
                 "--finetune-epochs", "1", "--plots", str(tmp_path / "plots"), "--trust-code", "--no-progress"]) == 0
    assert {n for _, n in training_runs} == {N_TRAIN - 25}      # scanned on 25 images, tuned on the rest
    entry = read_info(out).history[-1]
    assert entry["val_images"] == 25 and "validation split" in entry["scan_on"] and entry["accuracy_on"] == "test"
    scan = json.loads((tmp_path / "plots" / "sensitivity.json").read_text())
    assert scan["split"] == "validation" and scan["val_images"] == 25
    assert main(["sensitivity", str(src), "--out-dir", str(tmp_path / "s"), "--sparsities", "0.5",
                 "--trust-code", "--no-progress"]) == 0
    scan = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    assert scan["val_images"] == N_TRAIN // 10                  # default: 10% of the training split
    assert main(["sensitivity", str(src), "--out-dir", str(tmp_path / "s2"), "--sparsities", "0.5",
                 "--eval-size", "12", "--trust-code", "--no-progress"]) == 0   # the old name, hidden
    assert json.loads((tmp_path / "s2" / "sensitivity.json").read_text())["val_images"] == 12


@pytest.mark.parametrize("argv,needle", [
    (["compress", "{src}", "--out", "{tmp}/a.dsz", "--val-size", "0"], "--val-size must be a whole number >= 1"),
    (["compress", "{src}", "--out", "{tmp}/a.dsz", "--scan-size", "0"], "--val-size must be a whole number >= 1"),
    (["compress", "{src}", "--out", "{tmp}/a.dsz", "--val-size", "200", "--trust-code"],
     "leaves none of its 200 training images"),
    (["sensitivity", "{src}", "--out-dir", "{tmp}/s", "--val-size", "-1"], "--val-size must be a whole number"),
    (["sensitivity", "{src}", "--out-dir", "{tmp}/s", "--eval", "test"], "--eval was removed"),
    (["prune", "{src}", "--out", "{tmp}/p", "--sparsity", "0.5", "--auto", "--val-size", "0"], "--val-size must"),
    (["prune", "{src}", "--out", "{tmp}/p", "--sparsity", "0.5", "--val-size", "5"], "applies to --auto"),
    (["prune", "{src}", "--out", "{tmp}/p", "--sparsity", "0.5", "--auto", "--eval", "test"], "--eval was removed"),
])
def test_val_size_errors_are_one_line(byo, tmp_path, capsys, run_error, training_runs, argv, needle):
    src = byo[0]
    line = run_error(capsys, [a.format(src=src, tmp=tmp_path) for a in argv])
    assert needle in line
    assert training_runs == []                                  # refused before any work
