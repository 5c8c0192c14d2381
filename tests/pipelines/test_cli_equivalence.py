"""The command line adds nothing to the library: for each command, the Python call and the CLI on
the same input write the same file (every tensor ``torch.equal``, the metadata equal but for
timings). Tiny model (LeNet-300, 1 epoch on 256 images), 1 fine-tuning epoch or less."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from deepshrink.cli import main
from deepshrink.distill import DistillConfig
from deepshrink.pipelines import (Finetune, QuantizeConfig, ScanConfig, StudentTraining, distill_file, prune_file,
                                  prune_channels_file, quantize_file, sensitivity_file)
from deepshrink.prune import ChannelConfig, PruneConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TIMINGS = {"seconds", "prune_seconds", "cache_seconds"}


@pytest.fixture(scope="module")
def dense(tmp_path_factory, train_cli_model):
    """``(root, data spec, model file)``: LeNet-300 trained 1 epoch through the CLI."""
    return train_cli_model(tmp_path_factory.mktemp("equivalence"), "dense.safetensors")


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _read(path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["deepshrink"])
    return tensors, meta


def assert_same_file(a, b) -> None:
    ta, ma = _read(a)
    tb, mb = _read(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k
    assert _without_timings(ma) == _without_timings(mb)


def test_prune(dense, tmp_path):
    _, _, src = dense
    argv = ["--sparsity", "0.8", "--finetune-epochs", "1", "--no-progress"]
    assert main(["prune", str(src), *argv, "--out", str(tmp_path / "cli.safetensors")]) == 0
    run = prune_file(src, tmp_path / "lib.safetensors", PruneConfig(sparsity=0.8, epochs=1, progress=False))
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")
    # the fine-tuning LR is the model's own, for Python callers too
    assert run.info.history[-1]["config"]["lr"] == run.info.train_config()["lr"]


def test_prune_with_overrides_and_a_teacher(dense, tmp_path):
    _, _, src = dense
    assert main(["prune", str(src), "--sparsity", "0.9", "--scope", "global", "--finetune-epochs", "1",
                 "--lr", "0.02", "--teacher", str(src), "--kd-alpha", "0.5", "--no-progress",
                 "--out", str(tmp_path / "cli.safetensors")]) == 0
    prune_file(src, tmp_path / "lib.safetensors", PruneConfig(sparsity=0.9, scope="global", epochs=1, kd_alpha=0.5,
                                                              progress=False),
               finetune=Finetune(lr=0.02), teacher=str(src))
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")


def test_prune_channels(dense, tmp_path):
    _, _, src = dense
    assert main(["prune-channels", str(src), "--ratio", "0.5", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "cli.safetensors")]) == 0
    prune_channels_file(src, tmp_path / "lib.safetensors", ChannelConfig(ratio=0.5, epochs=1, progress=False))
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")


@pytest.mark.parametrize("argv,cfg", [
    (["--calib", "64", "--qat-epochs", "0.5"], QuantizeConfig(calib=64, qat_epochs=0.5, progress=False)),
    (["--bits", "4", "--per-channel", "--calib", "32"], QuantizeConfig(bits=4, per_channel=True, calib=32,
                                                                       progress=False)),
    (["--method", "kmeans", "--bits", "8", "--fc-bits", "5", "--qat-epochs", "0.5"],
     QuantizeConfig(method="kmeans", bits=8, fc_bits=5, qat_epochs=0.5, progress=False)),
], ids=["linear-qat", "linear-ptq-4bit", "kmeans"])
def test_quantize(dense, tmp_path, argv, cfg):
    _, _, src = dense
    assert main(["quantize", str(src), *argv, "--no-progress", "--out", str(tmp_path / "cli.safetensors")]) == 0
    quantize_file(src, tmp_path / "lib.safetensors", cfg)
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")


def test_distill(dense, tmp_path):
    _, _, teacher = dense
    assert main(["distill", "--teacher", str(teacher), "--student", "lenet5", "--kwargs",
                 '{"conv1": 2, "conv2": 3, "fc1": 8}', "--epochs", "1", "--batch-size", "64", "--augment", "off",
                 "--no-progress", "--out", str(tmp_path / "cli.safetensors")]) == 0
    run = distill_file(teacher, "lenet5", tmp_path / "lib.safetensors", DistillConfig(),
                       training=StudentTraining(epochs=1, batch_size=64, progress=False),
                       finetune=Finetune(augment=False), kwargs={"conv1": 2, "conv2": 3, "fc1": 8})
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")
    assert run.train.warmup_epochs == StudentTraining.warmup_epochs


def test_distill_a_student_file(dense, tmp_path):
    _, _, teacher = dense
    assert main(["distill", "--teacher", str(teacher), "--student", str(teacher), "--epochs", "1",
                 "--features", "fc2:fc2", "--no-progress", "--out", str(tmp_path / "cli.safetensors")]) == 0
    distill_file(teacher, str(teacher), tmp_path / "lib.safetensors", DistillConfig(features=["fc2:fc2"]),
                 training=StudentTraining(epochs=1, progress=False))
    assert_same_file(tmp_path / "cli.safetensors", tmp_path / "lib.safetensors")


def test_sensitivity(dense, tmp_path):
    _, _, src = dense
    assert main(["sensitivity", str(src), "--out-dir", str(tmp_path / "cli"), "--sparsities", "0.5,0.9",
                 "--val-size", "32", "--no-progress"]) == 0
    run = sensitivity_file(src, tmp_path / "lib", ScanConfig(sparsities=(0.5, 0.9), val_size=32, progress=False))
    assert (tmp_path / "cli" / "sensitivity.json").read_text() == run.json_path.read_text()
