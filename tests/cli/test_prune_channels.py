"""deepshrink prune-channels: channels removed, the plan stored and composed; bad ratios refused."""

from __future__ import annotations

from deepshrink.cli import main
from deepshrink.io import load_model
from deepshrink.prune.plan import PLAN_KEY


def test_prune_channels_command(tmp_path, train_cli_model, run_error, capsys):
    _, spec, src = train_cli_model(tmp_path, "dense.safetensors")
    out = tmp_path / "small.safetensors"
    code = main(["prune-channels", str(src), "--ratio", "0.5", "--finetune-epochs", "1", "--data", spec,
                 "--no-progress", "--out", str(out)])
    assert code == 0
    assert "MACs" in capsys.readouterr().out
    model, info = load_model(out)
    assert model.fc1.out_features == 150 and model.fc2.in_features == 150 and model.fc2.out_features == 50
    assert info.extra[PLAN_KEY]["layers"]["fc1"]["out"] and info.history[-1]["op"] == "prune_channels"
    again = tmp_path / "smaller.safetensors"   # pruning a pruned file composes the plans
    assert main(["prune-channels", str(out), "--macs-target", "0.8", "--finetune-epochs", "0", "--data", spec,
                 "--no-progress", "--out", str(again)]) == 0
    model2, info2 = load_model(again)
    assert model2.fc1.out_features < 150
    assert len(info2.extra[PLAN_KEY]["layers"]["fc1"]["out"]) == model2.fc1.out_features
    assert "ratios are fractions" in run_error(capsys, ["prune-channels", src, "--ratio", "1.5", "--data", spec,
                                                        "--out", tmp_path / "x.safetensors"])

