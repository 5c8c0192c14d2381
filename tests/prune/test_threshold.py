"""Hand-given per-layer pruning targets (deepshrink/prune/threshold.py), in the library and the commands."""

import pytest
import torch

from deepshrink.cli import main
from deepshrink.compress import CompressConfig, compress
from deepshrink.errors import ConfigError
from deepshrink.io import load_model
from deepshrink.masks import layer_sparsities
from deepshrink.models import build
from deepshrink.prune.threshold import parse_layer_values, std_threshold_sparsities
from deepshrink.quant import quantized_layers

pytestmark = pytest.mark.usefixtures("one_thread")


def test_std_threshold_matches_a_brute_force_count():
    torch.manual_seed(0)
    w = {"a.weight": torch.randn(30, 20), "b.weight": 3 * torch.randn(10, 10)}
    got = std_threshold_sparsities(w, 1.0, {"b": 0.5})
    for name, m in (("a.weight", 1.0), ("b.weight", 0.5)):
        flat = w[name].reshape(-1).tolist()
        mean = sum(flat) / len(flat)
        std = (sum((v - mean) ** 2 for v in flat) / (len(flat) - 1)) ** 0.5   # unbiased, as torch.std
        assert got[name] == pytest.approx(sum(abs(v) < m * std for v in flat) / len(flat))
    # a normal layer at s = 1 loses about 68%, and s = 0 nothing
    assert std_threshold_sparsities({"n": torch.randn(100_000)}, 1.0)["n"] == pytest.approx(0.683, abs=0.01)
    assert std_threshold_sparsities(w, 0.0) == {"a.weight": 0.0, "b.weight": 0.0}


def test_bad_hand_targets_are_config_errors():
    w = {"fc1.weight": torch.randn(4, 4)}
    with pytest.raises(ConfigError, match="no prunable weight 'fc9'"):
        std_threshold_sparsities(w, 1.0, {"fc9": 2.0})
    with pytest.raises(ConfigError, match=">= 0"):
        std_threshold_sparsities(w, -1.0)
    assert parse_layer_values("fc1=0.9, conv2=.5", "x") == {"fc1": 0.9, "conv2": 0.5}
    for bad, msg in (("fc1", "NAME=VALUE"), ("fc1=x", "not a number"), ("fc1=1,fc1=2", "twice"),
                     ("fc1=nan", "finite")):
        with pytest.raises(ConfigError, match=msg):
            parse_layer_values(bad, "--sparsity-map")


def test_compress_takes_a_sparsity_map_per_layer_bits_and_linear_codebooks(make_dataset):
    torch.manual_seed(0)
    model = build("lenet300", in_features=64, num_classes=4)
    cfg = CompressConfig(layer_sparsity={"fc1": 0.9}, bits={"fc1": 3, "fc3": 6}, linear_codebooks=("fc2",),
                         bit_widths="fixed", share_biases=False, remove_dead=False, attempts=1, prune_epochs=1, centroid_epochs=0, val_size=64, progress=False, verbose=False)
    res = compress(model, make_dataset(), cfg, {"lr": 0.05, "augment": False}, report_test=False)
    assert res.scan is None and res.accuracy_before != res.accuracy_before      # NaN: test untouched
    sp = layer_sparsities(res.model)
    assert sp["fc1.weight"] == pytest.approx(0.9, abs=0.01) and sp["fc2.weight"] == 0.0
    assert res.bits == {"fc1": 3, "fc2": 5, "fc3": 6}
    steps = torch.diff(quantized_layers(res.model)["fc2"].weight_codebook.double())   # (31,) evenly spaced
    assert steps.numel() == 31 and torch.allclose(steps, steps.mean().expand(31), atol=1e-4)
    steps = torch.diff(quantized_layers(res.model)["fc3"].weight_codebook.double())   # k-means: not
    assert not torch.allclose(steps, steps.mean().expand_as(steps), atol=1e-4)
    with pytest.raises(ConfigError, match="not both"):
        CompressConfig(layer_sparsity={"fc1": 0.5}, threshold_std=1.0).check()


def test_prune_and_compress_commands_take_hand_targets(tmp_path, train_cli_model, run_error, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    model_file, out = str(model_file), str(tmp_path / "map.safetensors")
    assert main(["prune", model_file, "--out", out, "--data", spec, "--sparsity-map", "fc1=0.8,fc2=0.5",
                 "--finetune-epochs", "1", "--no-progress"]) == 0
    sp = layer_sparsities(load_model(out)[0])
    assert sp["fc1.weight"] == pytest.approx(0.8, abs=0.01) and sp["fc2.weight"] == pytest.approx(0.5, abs=0.01)
    dense, _ = load_model(model_file)
    want = std_threshold_sparsities({"fc1.weight": dense.fc1.weight, "fc2.weight": dense.fc2.weight}, 1.0,
                                    {"fc2": 0.5})
    out2 = str(tmp_path / "std.safetensors")
    assert main(["prune", model_file, "--out", out2, "--data", spec, "--threshold-std", "1",
                 "--threshold-scale", "fc2=0.5", "--finetune-epochs", "1", "--no-progress"]) == 0
    sp = layer_sparsities(load_model(out2)[0])
    for name, s in want.items():
        assert sp[name] == pytest.approx(s, abs=0.01)
    dsz = str(tmp_path / "m.dsz")
    assert main(["compress", model_file, "--out", dsz, "--data", spec, "--threshold-std", "1.5",
                 "--layer-bits", "fc1=3", "--linear-codebooks", "fc2", "--prune-epochs", "1",
                 "--attempts", "1", "--max-drop", "100", "--no-progress"]) == 0
    assert "fc1.weight" in capsys.readouterr().out
    assert "--sparsity-map or --threshold-std" in run_error(capsys, ["prune", model_file, "--out", out, "--data", spec])
    assert "no prunable weight 'fc7'" in run_error(capsys, ["prune", model_file, "--out", out, "--data", spec,
                                                            "--sparsity-map", "fc7=0.5"])
    assert "whole number" in run_error(capsys, ["compress", model_file, "--out", dsz, "--data", spec,
                                               "--layer-bits", "fc1=2.5"])
