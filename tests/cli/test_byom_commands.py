"""Every command on a model no one here wrote: a CNN defined in this file, its weights a plain
PyTorch state dict (``.pt``), opened with ``--model module:callable --kwargs JSON`` the way a user
with a third-party model would; and a tiny random BERT (``hf:DIR``) through the commands that
handle unlabelled text (profile, evaluate --reference) and the one-line refusals of the others."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink.cli import main
from deepshrink.codec import read_compressed_info
from deepshrink.io import load_model, read_info

pytestmark = pytest.mark.usefixtures("one_thread")


def build(width: int = 8, num_classes: int = 4) -> nn.Module:
    """The user's own CNN: needs its ``width`` argument (given with --kwargs), not in the zoo."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(width * 16, num_classes))


ARCH = f"{__name__}:build"
KW = json.dumps({"width": 6})


@pytest.fixture(scope="module")
def plain(tmp_path_factory, write_npz):
    """(a plain state dict file of ``build(width=6)``, a tiny npz spec of 8x8 images)."""
    root = tmp_path_factory.mktemp("byom")
    spec = write_npz(root / "tiny.npz", n_train=160, n_test=40, hw=8, classes=4)
    torch.manual_seed(0)
    path = root / "third_party.pt"
    torch.save(build(width=6).state_dict(), path)
    return path, spec


def _model(path):
    return [str(path), "--model", ARCH, "--kwargs", KW]


def test_every_command_on_a_plain_state_dict(plain, tmp_path, capsys):
    path, spec = plain
    common = ["--data", spec]
    runs = {
        "evaluate": ["evaluate", *_model(path), *common, "--json"],
        "profile": ["profile", *_model(path), "--input-shape", "1,1,8,8", "--json"],
        "sensitivity": ["sensitivity", *_model(path), *common, "--out-dir", str(tmp_path / "sens"),
                        "--sparsities", "0.5,0.9", "--no-progress"],
        "prune": ["prune", *_model(path), *common, "--sparsity", "0.5", "--finetune-epochs", "1", "--no-progress",
                  "--out", str(tmp_path / "pruned.safetensors")],
        "prune-channels": ["prune-channels", *_model(path), *common, "--ratio", "0.5", "--finetune-epochs", "1",
                           "--no-progress", "--out", str(tmp_path / "slim.safetensors")],
        "quantize": ["quantize", *_model(path), *common, "--calib", "32", "--out", str(tmp_path / "q.safetensors")],
        "compress": ["compress", *_model(path), *common, "--prune-epochs", "1", "--centroid-epochs", "0",
                     "--attempts", "1", "--no-progress", "--out", str(tmp_path / "c.dsz")],
        "export": ["export", *_model(path), *common, "--onnx", str(tmp_path / "m.onnx")],
        "search": ["search", *_model(path), *common, "--budget", "2", "--finetune-epochs", "1", "--centroid-epochs",
                   "0", "--max-drop", "100", "--no-progress", "--out", str(tmp_path / "s.dsz")],
        "filter-analysis": ["filter-analysis", *_model(path), *common, "--ratios", "0.5", "--no-progress",
                            "--out-dir", str(tmp_path / "fa")],
    }
    for name, argv in runs.items():
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1), f"{name}: {err}"        # compress exits 1 when over its budget
        assert "Traceback" not in err
    # the files written remember the architecture and its kwargs: they reopen without --model
    for out in ("pruned.safetensors", "slim.safetensors", "q.safetensors"):
        info = read_info(tmp_path / out)
        assert info.arch == ARCH and info.kwargs == {"width": 6}
        model, _ = load_model(tmp_path / out, trust_code=True)
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert read_compressed_info(tmp_path / "c.dsz").kwargs == {"width": 6}
    assert read_compressed_info(tmp_path / "s.dsz").kwargs == {"width": 6}       # the search's choice too
    assert (tmp_path / "s.recipe.yaml").is_file() and (tmp_path / "fa" / "filter_analysis.json").is_file()
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_kwargs_without_model_is_one_error(plain, capsys, run_error):
    path, spec = plain
    line = run_error(capsys, ["evaluate", str(path), "--kwargs", KW, "--data", spec])
    assert "--model" in line
    assert "JSON" in run_error(capsys, ["evaluate", *_model(path)[:3], "--kwargs", "{nope", "--data", spec])


def test_wrong_kwargs_for_the_weights_is_one_error(plain, capsys, run_error):
    path, spec = plain
    line = run_error(capsys, ["evaluate", str(path), "--model", ARCH, "--kwargs", '{"width": 5}', "--data", spec])
    assert "third_party.pt" in line
