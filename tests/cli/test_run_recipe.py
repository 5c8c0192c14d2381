"""deepshrink run RECIPE FILE --out OUT on a tiny trained LeNet-300: the steps replayed, one ledger
row per step stored in the output file and printed, a replay writing the same bytes, and one-line
errors for bad recipes."""

from __future__ import annotations

import json

import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model, read_info
from deepshrink.ledger import ZEROS_FLAG

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """\
steps:
  - prune: {sparsity: 0.8, epochs: 1, seed: 1}
  - kmeans: {bits: 4}
  - encode: {}
"""
COLUMNS = {"step", "file_bytes", "params", "nonzero_params", "macs", "peak_memory_bytes", "accuracy", "flags"}


def _recipe(root, text=RECIPE, name="r.yaml"):
    path = root / name
    path.write_text(text)
    return path


def test_run_replays_the_steps_and_keeps_the_ledger(trained, tmp_path, capsys):
    root, spec, model = trained
    out = tmp_path / "m.dsz"
    capsys.readouterr()
    assert main(["run", str(_recipe(tmp_path)), str(model), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "step 1 (prune)" in text and "3 encode" in text and f"flag: 1 prune: {ZEROS_FLAG}" in text
    ledger = read_info(out).extra["ledger"]
    assert [r["step"] for r in ledger["rows"]] == ["input", "1 prune", "2 kmeans", "3 encode"]
    assert all(set(r) == COLUMNS for r in ledger["rows"])
    rows = ledger["rows"]
    assert rows[1]["nonzero_params"] < rows[0]["nonzero_params"] and rows[1]["params"] == rows[0]["params"]
    assert ZEROS_FLAG in rows[1]["flags"]
    assert rows[3]["file_bytes"] < rows[2]["file_bytes"] / 5           # the .dsz encodes the shared weights
    assert ledger["recipe"][1] == {"kmeans": {"bits": 4}}
    from deepshrink.profile.peak_memory import peak_memory
    dense, _ = load_model(model)
    assert rows[0]["peak_memory_bytes"] == peak_memory(dense.eval(), torch.zeros(1, 1, 28, 28)).predicted_peak_bytes
    decoded, info = load_model(out)
    w = decoded.fc1.weight
    assert (w == 0).float().mean() >= 0.79                                       # masks carried
    assert torch.isin(w[w != 0], decoded.fc1.weight_codebook).all()             # codebooks carried
    assert [h["op"] for h in info.history][-3:] == ["prune", "quantize", "encode"]
    assert not list(tmp_path.glob(".*.run"))                                     # work folder removed
    page = (tmp_path / "m.report.html").read_text()                              # the ledger as a page
    assert "m.report.html" in text and "3 encode" in page and ZEROS_FLAG in page
    assert 'src="data:image/png;base64,' in page and not list(tmp_path.glob(".m.report.html.*"))


def test_a_replay_writes_a_bit_identical_dsz(trained, tmp_path):
    root, spec, model = trained
    recipe = _recipe(tmp_path)
    outs = [tmp_path / "a.dsz", tmp_path / "b.dsz"]
    for out in outs:
        assert main(["run", str(recipe), str(model), "--out", str(out), "--no-progress", "--no-latency"]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_json_prints_one_object_with_the_timed_ledger(trained, tmp_path, capsys):
    root, spec, model = trained
    recipe = _recipe(tmp_path, "steps:\n  - prune: {sparsity: 0.5, epochs: 0}\n")
    out = tmp_path / "p.safetensors"
    capsys.readouterr()
    assert main(["run", str(recipe), str(model), "--out", str(out), "--json", "--no-progress", "--data", spec]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["command"] == "run" and obj["out"] == str(out)
    assert [r["step"] for r in obj["ledger"]] == ["input", "1 prune"]
    assert obj["ledger"][1]["speedup"] > 0 and obj["ledger"][0]["latency_ms"] > 0
    stored = read_info(out).extra["ledger"]["rows"]
    assert "latency_ms" not in stored[1] and stored[1]["accuracy"] == obj["ledger"][1]["accuracy"]


@pytest.mark.parametrize("text,words", [
    ("steps:\n  - prune: {sparsity: 0.5}\n  - kmeens: {bits: 4}\n", ["step 2", "kmeens"]),
    ("steps:\n  - kmeans: {bitz: 4}\n", ["step 1 (kmeans)", "bitz", "valid keys"]),
    ("steps: [prune: {\n", ["r.yaml", "not valid YAML"]),
    ("prune\n", ["r.yaml", "not a recipe"]),
])
def test_bad_recipes_are_one_line_errors_before_anything_runs(trained, tmp_path, capsys, run_error, text, words):
    root, spec, model = trained
    out = tmp_path / "x.dsz"
    line = run_error(capsys, ["run", _recipe(tmp_path, text), model, "--out", out])
    for w in words:
        assert w in line, line
    assert not out.exists()


def test_the_output_suffix_must_match_the_last_step(trained, tmp_path, capsys, run_error):
    root, spec, model = trained
    line = run_error(capsys, ["run", _recipe(tmp_path), model, "--out", tmp_path / "x.safetensors"])
    assert ".dsz" in line


def test_channels_distill_and_qat_steps_chain_through_their_files(trained, tmp_path, capsys):
    root, spec, model = trained
    recipe = _recipe(tmp_path, "steps:\n  - prune-channels: {ratio: 0.5, epochs: 0, max_drop: null}\n"
                               "  - distill: {epochs: 1, temperature: 2}\n"
                               "  - qat: {bits: 8, qat_epochs: 0.25, calib: 16}\n")
    out = tmp_path / "q.safetensors"
    assert main(["run", str(recipe), str(model), "--out", str(out), "--no-progress", "--no-latency"]) == 0
    info = read_info(out)
    rows = info.extra["ledger"]["rows"]
    assert [r["step"] for r in rows] == ["input", "1 prune-channels", "2 distill", "3 qat"]
    assert rows[1]["macs"] < rows[0]["macs"] / 1.5 and rows[2]["params"] == rows[1]["params"]   # the plan carried
    assert "channel_plan" in info.extra and [h["op"] for h in info.history][-3:] == [
        "prune_channels", "distill", "quantize"]
    assert all(".run/" not in json.dumps(h) for h in info.history)      # no work-folder path kept
