"""deepshrink prune-channels --latency-target: NetAdapt on the command line, with the latency
measurements replaced by MAC-proportional fakes (deterministic); the plan is kept in the file, the
result reports predicted and measured latency; bad targets and mixed options are one error line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import deepshrink.prune.netadapt as netadapt_mod
from deepshrink.cli import main
from deepshrink.io import load_model
from deepshrink.prune.latency_table import layer_specs
from deepshrink.prune.plan import PLAN_KEY


@pytest.fixture
def fake_latency(monkeypatch, tmp_path):
    """Milliseconds = conv/linear MACs x 1e-6, for layers and whole models; the cache under tmp_path."""
    monkeypatch.setenv("DEEPSHRINK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(netadapt_mod, "measure_layer", lambda spec, threads, warmup, repeats: spec.macs * 1e-6)
    def ms(model, x):
        return sum(s.macs for s in layer_specs(model, x).values()) * 1e-6

    monkeypatch.setattr(netadapt_mod, "measure_latency", lambda model, x, warmup, repeats, threads: SimpleNamespace(
        median_ms=ms(model, x)))
    # the side-by-side timing of a model against the original: time(a) / time(b), as compare_latency gives it
    monkeypatch.setattr(netadapt_mod, "compare_latency", lambda a, b, x, warmup, repeats, threads: SimpleNamespace(
        ratio_median=ms(a, x) / ms(b, x)))
    return tmp_path / "cache" / "latency"


def test_latency_target_command(tmp_path, trained, fake_latency, capsys):
    _, spec, src = trained
    out = tmp_path / "fast.safetensors"
    code = main(["prune-channels", str(src), "--latency-target", "0.6", "--batch-size", "2", "--val-size", "32",
                 "--finetune-epochs", "1", "--data", spec, "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "latency (batch 2, torch" in text and "predicted" in text and "MACs" in text and "params" in text
    model, info = load_model(out)
    assert model.fc1.out_features < 300 or model.fc2.out_features < 100
    assert len(info.extra[PLAN_KEY]["layers"]["fc1"]["out"]) == model.fc1.out_features
    entry = info.history[-1]
    assert entry["op"] == "prune_channels" and entry["latency"]["reached"]
    assert entry["latency"]["latency_ratio"] <= 0.6 and entry["latency"]["score_images"] == 32
    assert len(list(fake_latency.glob("*.json"))) == 1           # the table cached under $DEEPSHRINK_CACHE

    again = tmp_path / "again.safetensors"                      # --json; the table now comes from the cache
    assert main(["prune-channels", str(src), "--latency-target", "0.6", "--batch-size", "2", "--val-size", "32",
                 "--finetune-epochs", "0", "--data", spec, "--no-progress", "--json", "--out", str(again)]) == 0
    obj = json.loads(capsys.readouterr().out)
    lat = obj["latency"]
    assert lat["table_measured"] == 0 and lat["reached"] and lat["batch_size"] == 2
    assert lat["tune_batches"] == 30                            # NetAdapt's short-term fine-tuning, by default
    assert lat["predicted_after_ms"] == pytest.approx(lat["latency_after_ms"])
    assert obj["macs_after"] < obj["macs_before"] and obj["params_after"] < obj["params_before"]


@pytest.mark.parametrize("extra, match", [
    (["--latency-target", "0"], "latency target"),
    (["--latency-target", "1"], "latency target"),
    (["--latency-target", "1.5"], "latency target"),
    (["--latency-target", "0.5", "--ratio", "0.5"], "give one of"),
    (["--latency-target", "0.5", "--macs-target", "0.5"], "give one of"),
    ([], "give one of"),
    (["--ratio", "0.5", "--batch-size", "4"], "only with --latency-target"),
    (["--latency-target", "0.5", "--batch-size", "0"], "batch size"),
    (["--latency-target", "0.5", "--rounds", "2"], "rounds"),
    (["--latency-target", "0.5", "--round-to", "16"], "do not apply"),
    (["--latency-target", "0.5", "--scope", "global"], "do not apply"),
    (["--latency-target", "0.5", "--finetune-epochs", "-1"], "epochs"),
    (["--latency-target", "0.5", "--short-term-batches", "-1"], "short-term"),
    (["--ratio", "0.5", "--short-term-batches", "5"], "only with --latency-target"),
])
def test_bad_latency_options_are_one_line(tmp_path, trained, run_error, capsys, extra, match):
    _, spec, src = trained
    line = run_error(capsys, ["prune-channels", src, *extra, "--data", spec, "--out", tmp_path / "x.safetensors"])
    assert match in line
    assert not (tmp_path / "x.safetensors").exists()


def test_short_term_tuning_is_in_the_written_weights(tmp_path, trained, fake_latency, capsys):
    """With no final fine-tuning, the file holds NetAdapt's short-term tuned weights: they differ
    from the original's cut to the same plan, and the tuned model scores what the file scores."""
    from deepshrink.prune.plan import ChannelPlan, apply_plan
    _, spec, src = trained
    outs = {}
    for n in (0, 2):
        out = tmp_path / f"t{n}.safetensors"
        assert main(["prune-channels", str(src), "--latency-target", "0.6", "--val-size", "32", "--finetune-epochs",
                     "0", "--short-term-batches", str(n), "--data", spec, "--no-progress", "--json",
                     "--out", str(out)]) == 0
        capsys.readouterr()
        outs[n] = load_model(out)
    (cut, info0), (tuned, info2) = outs[0], outs[2]
    assert info2.history[-1]["latency"]["tune_batches"] == 2
    original, _ = load_model(src)
    replayed = apply_plan(original, ChannelPlan.from_dict(info2.extra[PLAN_KEY]))
    assert {k: v.shape for k, v in replayed.state_dict().items()} == {k: v.shape for k, v in tuned.state_dict().items()}
    assert any(not torch.equal(a, b) for a, b in zip(replayed.state_dict().values(), tuned.state_dict().values()))
    replayed0 = apply_plan(load_model(src)[0], ChannelPlan.from_dict(info0.extra[PLAN_KEY]))
    assert all(torch.equal(a, b) for a, b in zip(replayed0.state_dict().values(), cut.state_dict().values()))
