"""``deepshrink early-exit`` end to end on a tiny ResNet-20 trained through the CLI (28x28 npz
images): the JSON it prints, the file it writes (heads and thresholds inside, loading rebuilds
them), one-line errors, and composition: an early-exit file pruned, k-means quantized and
compressed keeps its heads, and ``--recalibrate`` chooses its thresholds again."""

from __future__ import annotations

import json

import pytest
import torch

from deepshrink.cli import main
from deepshrink.exit_heads import EXITS_KEY
from deepshrink.io import load_model
from deepshrink.modelfile import read_safetensors
from deepshrink.pipelines.early_exit import open_early_exit

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--epochs", "1", "--val-size", "64", "--no-progress", "--head-depth", "1", "--max-drop", "5"]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory, write_npz, one_thread):
    root = tmp_path_factory.mktemp("early_exit")
    spec = write_npz(root / "tiny.npz", n_train=320, n_test=96)
    out = root / "resnet.safetensors"
    code = main(["train", "--model", "resnet20", "--kwargs", '{"widths": [4, 8, 8], "blocks": 1}', "--data", spec,
                 "--epochs", "2", "--batch-size", "32", "--no-progress", "--out", str(out)])
    assert code == 0
    return root, spec, out


@pytest.fixture(scope="module")
def ee_file(resnet_file):
    root, spec, src = resnet_file
    out = root / "ee.safetensors"
    assert main(["early-exit", str(src), "--out", str(out), "--at", "layer1", "layer2", *FAST]) == 0
    return out


def test_json_reports_the_test_split_once_and_the_file_holds_heads_and_thresholds(resnet_file, tmp_path, capsys):
    _, _, src = resnet_file
    out = tmp_path / "sub" / "ee.safetensors"
    capsys.readouterr()
    assert main(["early-exit", str(src), "--out", str(out), "--json", "--plot", str(tmp_path / "c.png"), *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert got["command"] == "early-exit" and got["out"] == str(out) and got["layers"] == ["layer1"]
    test = got["test"]
    assert test["images"] == 96 and sum(test["shares"]) == pytest.approx(1.0)
    assert test["expected_macs"] <= test["original_macs"] * 1.5
    assert set(got["policies"]) == {"max_softmax", "entropy", "learned"}
    assert (tmp_path / "c.png").stat().st_size > 0
    state, info = read_safetensors(out)
    assert any(k.startswith("exit_heads.0.") for k in state)
    assert info.extra[EXITS_KEY]["policy"] == got["policy"]
    assert info.history[-1]["op"] == "early_exit" and info.history[-1]["adaptive_accuracy"] == test["accuracy"]


def test_the_written_file_runs_adaptively(ee_file, resnet_file):
    ee, info = open_early_exit(ee_file)
    plain, _ = load_model(resnet_file[2])
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        out = ee(x)
        last = ee.last_exits == 2
        assert out.shape == (5, 10)
        torch.testing.assert_close(out[last], plain(x)[last], rtol=1e-5, atol=1e-6)   # its rows run as a smaller batch


@pytest.mark.parametrize("argv, words", [
    (["--at", "layer9"], "'layer9'"),
    (["--at", "layer1.0.conv1"], "layer1.0.conv1"),
    (["--recalibrate"], "no exit heads to recalibrate"),
    (["--augment", "on"], "--mode joint"),
    (["--exit-weights", "1", "2", "3"], "--exit-weights"),
    (["--lambdas", "-1"], "--lambdas"),
])
def test_bad_input_is_one_error_line(resnet_file, tmp_path, capsys, run_error, argv, words):
    _, _, src = resnet_file
    line = run_error(capsys, ["early-exit", src, "--out", tmp_path / "o.safetensors", *FAST, *argv])
    assert words in line
    assert not (tmp_path / "o.safetensors").exists()


def test_an_early_exit_file_can_be_pruned_quantized_and_compressed(ee_file, resnet_file, tmp_path):
    _, spec, _ = resnet_file
    steps = {
        "pruned.safetensors": ["prune", str(ee_file), "--sparsity", "0.5", "--finetune-epochs", "0"],
        "kmeans.safetensors": ["quantize", str(ee_file), "--method", "kmeans", "--finetune-epochs", "0"],
        "small.dsz": ["compress", str(ee_file), "--finetune-epochs", "0", "--sparsity", "0.5", "--max-drop", "100"],
        "int8.safetensors": ["quantize", str(ee_file), "--calib", "32"],          # module swap keeps the heads
        "slim.safetensors": ["prune-channels", str(ee_file), "--ratio", "0.5", "--finetune-epochs", "0"],
    }
    _, before = read_safetensors(ee_file)
    for name, argv in steps.items():
        out = tmp_path / name
        assert main([*argv, "--out", str(out), "--no-progress"]) == 0, name
        model, info = load_model(out)
        heads = model.exit_heads
        assert len(heads) == 2 and info.extra[EXITS_KEY]["thresholds"] == before.extra[EXITS_KEY]["thresholds"]
        again = tmp_path / f"re_{name}.safetensors"
        assert main(["early-exit", str(out), "--recalibrate", "--out", str(again), *FAST]) == 0, name
        ee, _ = open_early_exit(again)
        with torch.no_grad():
            ee(torch.randn(3, 1, 28, 28))
    slim, info = load_model(tmp_path / "slim.safetensors")
    assert slim.layer1[0].conv2.out_channels < 4                        # channels really removed ...
    assert slim.exit_heads[0][0].in_channels == slim.layer1[0].conv2.out_channels   # ... and the head reads them
    assert "exit_heads.0.0" in info.extra["channel_plan"]["layers"]
    int8, info = load_model(tmp_path / "int8.safetensors")
    assert info.extra["quant"]["placement"] == "swap" and len(int8.exit_heads) == 2
    pruned, _ = load_model(tmp_path / "pruned.safetensors")
    assert not hasattr(pruned.exit_heads[0][0], "weight_mask")      # the heads are no pruning target
    assert hasattr(pruned.fc, "weight_mask") or hasattr(pruned.layer1[0].conv1, "weight_mask")


def test_profile_reports_the_expected_macs_from_the_exit_shares(ee_file, capsys):
    capsys.readouterr()
    assert main(["profile", str(ee_file), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    ee = got["early_exit"]
    _, info = read_safetensors(ee_file)
    shares = info.extra[EXITS_KEY]["notes"]["val_shares"]
    assert ee["shares"] == shares and ee["original_macs"] == got["totals"]["macs"]   # heads: not in the totals
    assert ee["expected_macs"] == pytest.approx(sum(s * c for s, c in zip(shares, ee["path_macs"])))
    assert main(["profile", str(ee_file)]) == 0
    assert "early exit (" in capsys.readouterr().out


def test_evaluate_reports_the_adaptive_model_beside_the_whole_one(ee_file, resnet_file, capsys):
    _, spec, _ = resnet_file
    capsys.readouterr()
    assert main(["evaluate", str(ee_file), "--data", spec, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    _, info = read_safetensors(ee_file)
    run = info.history[-1]
    assert got["adaptive"]["accuracy"] == pytest.approx(run["adaptive_accuracy"])      # what early-exit reported
    assert got["adaptive"]["shares"] == pytest.approx(run["shares"])
    assert got["adaptive"]["expected_macs"] == pytest.approx(run["expected_macs"])
    assert main(["evaluate", str(ee_file), "--data", spec]) == 0
    out = capsys.readouterr().out
    assert "early exit (" in out and "whole model" in out and "samples leaving at each exit" in out


def test_the_seed_sets_the_heads_initial_weights(resnet_file, tmp_path):
    _, _, src = resnet_file
    heads = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.safetensors"
        assert main(["early-exit", str(src), "--out", str(out), "--at", "layer1", *FAST, "--epochs", "0",
                     "--seed", seed]) == 0
        state, _ = read_safetensors(out)
        heads[name] = state["exit_heads.0.0.weight"]
    assert torch.equal(heads["a"], heads["b"]) and not torch.equal(heads["a"], heads["c"])


def test_heads_that_cannot_be_matched_after_a_cut_are_dropped_with_their_plan_entries(ee_file, tmp_path, capsys,
                                                                                       monkeypatch):
    from deepshrink.pipelines import prune_channels as pc
    once = tmp_path / "once.safetensors"
    assert main(["prune-channels", str(ee_file), "--ratio", "0.25", "--finetune-epochs", "0", "--out", str(once),
                 "--no-progress"]) == 0
    assert any(k.startswith("exit_heads.") for k in read_safetensors(once)[1].extra["channel_plan"]["layers"])
    monkeypatch.setattr(pc, "cut_heads", lambda model, layers, *a: (pc.ChannelPlan(), list(layers)))
    twice = tmp_path / "twice.safetensors"
    capsys.readouterr()
    assert main(["prune-channels", str(once), "--ratio", "0.25", "--finetune-epochs", "0", "--out", str(twice),
                 "--no-progress"]) == 0
    assert "the exit heads are dropped" in capsys.readouterr().err
    model, info = load_model(twice)
    assert EXITS_KEY not in info.extra and not hasattr(model, "exit_heads")
    assert not any(k.startswith("exit_heads.") for k in info.extra["channel_plan"]["layers"])
