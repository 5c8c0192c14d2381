"""deepshrink distill end to end on a tiny npz data set, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from deepshrink.cli import main
from deepshrink.io import load_model, read_info

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(trained):
    return trained


def test_distill_zoo_student_from_a_teacher_file(teacher, tmp_path, capsys):
    root, spec, teacher_file = teacher
    out = tmp_path / "student.safetensors"
    capsys.readouterr()
    code = main(["distill", "--teacher", str(teacher_file), "--student", "lenet5", "--kwargs",
                 '{"conv1": 2, "conv2": 3, "fc1": 8}', "--epochs", "1", "--batch-size", "64", "--augment", "off",
                 "--loss", "l2", "--no-progress", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "teacher logits cached" in text and "student test accuracy" in text
    model, info = load_model(out)
    assert info.arch == "lenet5" and info.kwargs["conv1"] == 2 and model.conv1.out_channels == 2
    entry = info.history[-1]
    assert entry["op"] == "train" and entry["config"]["epochs"] == 1 and entry["config"]["augment"] is False
    assert entry["config"]["warmup_epochs"] == 1.0  # the distill default, whatever the recipe says
    assert entry["distill"]["loss"] == "l2" and entry["distill"]["cache_misses"] == 0
    assert entry["distill"]["cache_hits"] == 256
    assert info.data == spec and 0 <= info.accuracy <= 1


def test_distill_student_file_with_features(teacher, tmp_path, capsys):
    _, _, teacher_file = teacher
    out = tmp_path / "again.safetensors"
    code = main(["distill", "--teacher", str(teacher_file), "--student", str(teacher_file), "--epochs", "1",
                 "--features", "fc2:fc2", "fc1:fc2", "--feature-loss", "cosine", "--no-progress", "--out", str(out)])
    assert code == 0
    info = read_info(out)
    entry = info.history[-1]
    assert entry["op"] == "distill" and entry["distill"]["features"] == ["fc2:fc2", "fc1:fc2"]
    assert entry["config"]["warmup_epochs"] == 1.0
    assert entry["distill"]["adapter_params"] == 300 * 100 + 100   # fc1 (300) -> fc2 (100); fc2 needs none
    assert [h["op"] for h in info.history] == ["train", "distill"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(info.accuracy)


@pytest.mark.parametrize("extra,needle", [
    (["--loss", "hinge"], "kl, l2, cosine"),
    (["--temperature", "0"], "--temperature '0': must be a finite number > 0"),   # the old spellings, named
    (["--alpha", "1.5"], "--alpha '1.5': must be a finite number in [0, 1]"),
    (["--kd-alpha", "1.5"], "--kd-alpha '1.5'"),
    (["--feature-loss", "kl", "--features", "fc1:fc1"], "feature loss"),
    (["--features", "fc1"], "STUDENT_LAYER:TEACHER_LAYER"),
    (["--features", "conv9:fc1"], "no layer 'conv9'"),
    (["--student", "no-such-net"], "neither a zoo model"),
    (["--kwargs", "[1]"], "--kwargs"),
    (["--teacher", "missing.safetensors"], "no such file"),
])
def test_distill_errors_are_one_line(teacher, tmp_path, capsys, run_error, extra, needle):
    _, _, teacher_file = teacher
    argv = ["distill", "--teacher", teacher_file, "--student", "lenet300", "--epochs", "1", "--no-progress",
            "--out", tmp_path / "x.safetensors"]
    line = run_error(capsys, argv + extra)  # a repeated option: argparse keeps the later value
    assert needle in line
    assert not (tmp_path / "x.safetensors").exists()
