"""``deepshrink train`` holds out the validation split the choosing commands carve (``--val-size``,
0: none), records it, and ``compress``, ``prune --auto`` and ``sensitivity`` warn, once, when the
model they choose for was trained on their validation images. Tiny LeNet-300, 1 epoch on a
256-image npz file (25 held out by default)."""

from __future__ import annotations

import json

import pytest
import torch

import deepshrink.pipelines.train as train_pipeline
from deepshrink import data as data_mod
from deepshrink.cli import main
from deepshrink.data import VAL_SEED
from deepshrink.io import ModelInfo, load_model, read_info, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN = 256
DEFAULT_HELD = 25                           # default_val_size(256): 10%


def _train(out, spec, *flags) -> int:
    return main(["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--out", str(out), *map(str, flags)])


@pytest.fixture
def fits(monkeypatch):
    """The Dataset every ``fit`` call of the train pipeline was handed."""
    seen = []
    real = train_pipeline.fit

    def spy(model, ds, cfg, *a, **k):
        seen.append(ds)
        return real(model, ds, cfg, *a, **k)

    monkeypatch.setattr(train_pipeline, "fit", spy)
    return seen


@pytest.fixture(scope="module")
def models(tmp_path_factory, write_npz):
    """``(spec, held-out model, --val-size 0 model, no-record model)``, trained once for the module."""
    root = tmp_path_factory.mktemp("holdout")
    spec = write_npz(root / "tiny.npz", n_train=N_TRAIN)
    held, whole, bare = root / "held.safetensors", root / "whole.safetensors", root / "bare.safetensors"
    assert _train(held, spec) == 0
    assert _train(whole, spec, "--val-size", 0) == 0
    model, info = load_model(held)
    save_model(model, bare, ModelInfo(arch=info.arch, kwargs=info.kwargs, input_shape=info.input_shape,
                                      mean=info.mean, std=info.std, data=spec))   # a third-party file: no history
    return spec, held, whole, bare


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_train_holds_out_the_validation_split_and_records_it(tmp_path, write_npz, fits, capsys):
    spec = write_npz(tmp_path / "tiny.npz", n_train=N_TRAIN)
    out = tmp_path / "m.safetensors"
    capsys.readouterr()
    assert _train(out, spec) == 0
    text = capsys.readouterr().out
    entry = read_info(out).history[0]
    assert entry["op"] == "train"
    assert entry["held_out"] == {"val_size": DEFAULT_HELD, "seed": VAL_SEED, "of_train": N_TRAIN}
    assert 0.0 <= entry["val_accuracy"] <= 1.0
    assert f"trained on {N_TRAIN - DEFAULT_HELD} images; {DEFAULT_HELD} held out for later choices" in text
    assert f"validation accuracy {entry['val_accuracy'] * 100:.2f}%" in text and "test accuracy" in text
    # oracle: the images fit trained on are exactly the training images less the seeded permutation's first 25
    (ds,) = fits
    full = data_mod.load(spec).train
    held = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(VAL_SEED))[:DEFAULT_HELD]
    keep = torch.ones(N_TRAIN, dtype=torch.bool)
    keep[held] = False
    assert len(ds.train) == N_TRAIN - DEFAULT_HELD
    assert _rows(ds.train.x) == _rows(full.x[keep]) and not _rows(ds.train.x) & _rows(full.x[held])
    # and they are the ones every choosing command leaves out of its fine-tuning
    assert torch.equal(ds.val.x, data_mod.with_validation(data_mod.load(spec)).val.x)


def test_val_size_zero_trains_on_every_image(tmp_path, write_npz, fits, capsys):
    spec = write_npz(tmp_path / "tiny.npz", n_train=N_TRAIN)
    out = tmp_path / "m.safetensors"
    capsys.readouterr()
    assert _train(out, spec, "--val-size", 0) == 0
    text = capsys.readouterr().out
    entry = read_info(out).history[0]
    assert entry["held_out"] == {"val_size": 0, "seed": VAL_SEED, "of_train": N_TRAIN}
    assert entry["val_accuracy"] is None
    assert f"trained on all {N_TRAIN} training images" in text
    (ds,) = fits
    assert ds.val is None and len(ds.train) == N_TRAIN


def test_val_size_given_and_json(tmp_path, write_npz, capsys):
    spec = write_npz(tmp_path / "tiny.npz", n_train=N_TRAIN)
    out = tmp_path / "m.safetensors"
    capsys.readouterr()
    assert _train(out, spec, "--val-size", 40, "--json") == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["held_out"] == {"val_size": 40, "seed": VAL_SEED, "of_train": N_TRAIN}
    assert obj["held_out"] == read_info(out).history[0]["held_out"]
    assert obj["val_accuracy"] == read_info(out).history[0]["val_accuracy"]


@pytest.mark.parametrize("size,says", [(-1, "must be 0"), (N_TRAIN, "smaller validation size")])
def test_bad_val_size_is_one_line(tmp_path, write_npz, capsys, run_error, size, says):
    spec = write_npz(tmp_path / "tiny.npz", n_train=N_TRAIN)
    out = tmp_path / "m.safetensors"
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--no-progress",
                              "--val-size", size, "--out", out])
    assert says in line and not out.exists()


COMMANDS = {  # name -> argv after the model file; {tmp} filled in
    "sensitivity": ["sensitivity", "{model}", "--out-dir", "{tmp}/scan", "--sparsities", "0.5"],
    "prune-auto": ["prune", "{model}", "--sparsity", "0.5", "--auto", "--finetune-epochs", "0",
                   "--out", "{tmp}/p.safetensors"],
    "compress": ["compress", "{model}", "--out", "{tmp}/c.dsz", "--allocation", "global", "--sparsity", "0.5",
                 "--finetune-epochs", "0", "--attempts", "1", "--max-drop", "100"],
}


def _warnings(capsys, name, model, tmp_path, *extra) -> list[str]:
    argv = [a.format(model=model, tmp=tmp_path) for a in COMMANDS[name]] + ["--no-progress", *map(str, extra)]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    return [line for line in err.splitlines() if "warning" in line]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_choosing_commands_warn_only_when_the_model_saw_their_validation_images(models, tmp_path, capsys, name):
    spec, held, whole, bare = models
    assert _warnings(capsys, name, held, tmp_path) == []                      # the split train held out
    assert _warnings(capsys, name, held, tmp_path, "--val-size", 10) == []    # a part of it
    (line,) = _warnings(capsys, name, whole, tmp_path)                         # --val-size 0: trained on them
    assert line.startswith(f"deepshrink: warning: {whole}: trained on the {DEFAULT_HELD} validation images")
    assert "inflated" in line
    (line,) = _warnings(capsys, name, held, tmp_path, "--val-size", 40)       # 15 of them it trained on
    assert "trained on the 40 validation images" in line and "another split (25 of 256" in line
    (line,) = _warnings(capsys, name, bare, tmp_path)                          # no training recorded
    assert f"{bare}: records no training" in line and "unknown" in line
