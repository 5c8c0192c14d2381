"""deepshrink profile --memory: peak inference memory, predicted and measured, in total and per layer,
in the table and in --json (new fields only: the existing ones keep their meaning)."""

from __future__ import annotations

import json

from deepshrink.cli import main


def test_cli_profile_memory_json(capsys):
    assert main(["profile", "--model", "lenet300", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "memory" not in plain                                  # off unless asked for
    assert main(["profile", "--model", "lenet300", "--memory-batch", "8", "--json"]) == 0   # implies --memory
    out = json.loads(capsys.readouterr().out)
    assert out["totals"] == plain["totals"] and out["input_shape"] == [1, 1, 28, 28]   # counts stay per batch 1
    mem = out["memory"]
    assert mem["batch"] == 8 and mem["input_shape"] == [8, 1, 28, 28]
    assert mem["weights_bytes"] == 266_610 * 4                     # lenet300: fp32, no buffers
    assert abs(mem["predicted_over_measured"] - 1) <= 0.1
    assert mem["allocator_peak_bytes"] >= mem["measured_peak_bytes"]
    assert {"predicted_peak_bytes", "measured_peak_bytes", "allocator_peak_bytes"} <= set(mem["means"])
    names = [r["name"] for r in mem["rows"]]
    assert names[0] == "flatten" and names[-1] == "fc3"
    assert max(r["predicted_peak_bytes"] for r in mem["rows"]) == mem["predicted_peak_bytes"]


def test_cli_profile_memory_table(capsys):
    assert main(["profile", "--model", "resnet20", "--memory"]) == 0
    out = capsys.readouterr().out
    assert "peak inference memory, one forward at batch 1" in out
    assert "| layer1.0.add | add |" in out and "| **peak** |" in out
    summary = next(line for line in out.splitlines() if line.startswith("peak memory at batch 1"))
    assert "predicted" in summary and "measured" in summary and "CPU allocator" in summary


def test_cli_profile_memory_bad_batch(capsys):
    assert main(["profile", "--model", "lenet5", "--memory-batch", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepshrink: error:") and "--memory-batch" in err[0]
