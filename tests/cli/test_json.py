"""``--json`` on every command that produces a model: stdout is exactly one JSON object (the output
file, its size and the key results), the progress messages go to stderr. Each writes into a folder
that does not exist yet: every command creates it (compress used to refuse). Tiny LeNet-300,
1 epoch or less of fine-tuning."""

from __future__ import annotations

import json

import pytest

from deepshrink.cli import main
from deepshrink.io import read_info

pytestmark = pytest.mark.usefixtures("one_thread")


def _json_run(capsys, argv) -> dict:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert cap.out.count("\n") == 1, cap.out          # one line: the object, nothing else
    obj = json.loads(cap.out)
    assert isinstance(obj, dict)
    return obj


def _check_output(obj: dict, out) -> None:
    assert obj["out"] == str(out) and out.is_file() and obj["size_bytes"] == out.stat().st_size


def test_train_json(tmp_path, trained, capsys):
    _, spec, _ = trained
    out = tmp_path / "new" / "deeper" / "t.safetensors"
    obj = _json_run(capsys, ["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--batch-size", "64",
                             "--no-progress", "--json", "--out", out])
    _check_output(obj, out)
    assert obj["command"] == "train" and obj["epochs"] == 1
    assert obj["accuracy"] == pytest.approx(read_info(out).accuracy)


def test_prune_json(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "new" / "p.safetensors"
    obj = _json_run(capsys, ["prune", model, "--sparsity", "0.8", "--finetune-epochs", "1", "--lr", "0.02",
                             "--no-progress", "--json", "--out", out])
    _check_output(obj, out)
    assert obj["sparsity"] == pytest.approx(0.8, abs=0.01) and set(obj["layers"]) == {"fc1.weight", "fc2.weight"}
    assert 0 <= obj["accuracy_before"] <= 1 and obj["accuracy_after"] == pytest.approx(read_info(out).accuracy)
    assert read_info(out).history[-1]["config"]["lr"] == 0.02      # --lr: the rate used


def test_prune_channels_json(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "new" / "c.safetensors"
    obj = _json_run(capsys, ["prune-channels", model, "--ratio", "0.5", "--finetune-epochs", "1", "--lr", "0.02",
                             "--no-progress", "--json", "--out", out])
    _check_output(obj, out)
    assert obj["macs_after"] < obj["macs_before"] and obj["params_after"] < obj["params_before"]
    assert {"accuracy_before", "accuracy_after", "rounds"} <= set(obj)
    assert read_info(out).history[-1]["config"]["lr"] == 0.02      # as given, not a tenth of it


def test_quantize_json(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "new" / "q.safetensors"
    obj = _json_run(capsys, ["quantize", model, "--bits", "8", "--calib", "32", "--no-progress", "--json",
                             "--out", out])
    _check_output(obj, out)
    assert obj["method"] == "linear" and obj["per_channel"] is True and obj["bits"] == 8
    assert 0 <= obj["accuracy_before"] <= 1 and 0 <= obj["accuracy_after"] <= 1
    out = tmp_path / "new" / "km.safetensors"
    obj = _json_run(capsys, ["quantize", model, "--method", "kmeans", "--no-progress", "--json", "--out", out])
    _check_output(obj, out)
    assert (obj["bits"], obj["fc_bits"]) == (8, 5) and "accuracy_kmeans" in obj


def test_compress_json(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "new" / "m.dsz"
    obj = _json_run(capsys, ["compress", model, "--finetune-epochs", "1", "--centroid-epochs", "0", "--sparsity",
                             "0.9", "--allocation", "global", "--attempts", "1", "--max-drop", "100",
                             "--no-progress", "--json", "--out", out])
    _check_output(obj, out)
    assert obj["ratio"] > 5 and obj["within_budget"] is True and obj["report"].endswith(".md")
    assert {"accuracy_before", "accuracy_after", "val_accuracy_before", "val_accuracy_after"} <= set(obj)


def test_distill_json(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "new" / "s.safetensors"
    obj = _json_run(capsys, ["distill", "--teacher", model, "--student", model, "--epochs", "1", "--no-progress",
                             "--json", "--out", out])
    _check_output(obj, out)
    assert obj["epochs"] == 1 and 0 <= obj["accuracy"] <= 1 and 0 <= obj["teacher_accuracy"] <= 1


def test_without_json_the_messages_stay_on_stdout(tmp_path, trained, capsys):
    _, spec, model = trained
    out = tmp_path / "plain.safetensors"
    assert main(["quantize", str(model), "--calib", "32", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and not text.lstrip().startswith("{")
