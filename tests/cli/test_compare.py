"""``deepshrink compare A B``: one table of two model files (costs, file bytes, accuracy or fidelity,
latency timed interleaved), every ratio B / A; the costs are what ``profile --json`` reports and the
accuracy what ``evaluate --json`` does; bad input is one line. Timings are never asserted, only
present and positive."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.io import ModelInfo, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--repeats", "3", "--batch-size", "4", "--threads", "1"]
COSTS = ("params", "nonzero_params", "bytes", "macs", "nonzero_macs", "memory_accesses", "min_memory_accesses")


@pytest.fixture(scope="module")
def pair(trained, tmp_path_factory):
    """``(data spec, A: the session's tiny lenet300, B: a copy with half its channels removed)``."""
    _, spec, a = trained
    b = tmp_path_factory.mktemp("compare") / "half.safetensors"
    assert main(["prune-channels", str(a), "--ratio", "0.5", "--finetune-epochs", "0", "--no-progress",
                 "--out", str(b)]) == 0
    return spec, a, b


def _json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([str(v) for v in argv]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1   # one JSON object, nothing else on stdout
    return json.loads(out)


def _rows(rec) -> dict:
    return {r["key"]: r for r in rec["rows"]}


def _check_ratios(rec) -> None:
    for r in rec["rows"]:
        if r["a"] in (None, 0) or r["b"] is None:
            assert r["ratio"] is None, r
        else:
            assert r["ratio"] == pytest.approx(r["b"] / r["a"], rel=1e-12), r


def test_json_rows_match_profile_and_evaluate(pair, capsys):
    spec, a, b = pair
    rec = _json(capsys, ["compare", a, b, "--json", *FAST])
    rows = _rows(rec)
    _check_ratios(rec)
    for side, path in (("a", a), ("b", b)):
        totals = _json(capsys, ["profile", path, "--json"])["totals"]
        for key in COSTS:
            assert rows[key][side] == totals[key], (key, side)
        assert rows["file_bytes"][side] == path.stat().st_size
        assert rows["accuracy"][side] == _json(capsys, ["evaluate", path, "--json"])["accuracy"]
    assert rows["params"]["b"] < rows["params"]["a"] and rows["macs"]["ratio"] < 0.75
    assert rec["data"] == {"a": spec, "b": spec} and rec["input_shape"] == [1, 28, 28]
    lat = rec["latency"]
    assert lat["interleaved"] is True and lat["statistic"] == "median"
    assert lat["batches"] == [1, 4] and lat["repeats"] == 3 and lat["threads"] == 1
    for n in (1, 4):
        row = rows[f"latency_ms_batch_{n}"]
        assert row["a"] > 0 and row["b"] > 0 and row["ratio"] > 0
        assert lat["speedup"][str(n)]["median"] > 0


def test_table_states_how_the_latency_was_measured(pair, capsys):
    _, a, b = pair
    capsys.readouterr()
    assert main(["compare", str(a), str(b), *FAST]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("metric"))
    assert head.split() == ["metric", "A", "B", "B/A"]
    params = next(line for line in out.splitlines() if line.startswith("params"))
    assert "266,610" in params and "125,810" in params and params.endswith("0.472")
    assert "test accuracy" in out and "latency, batch 1" in out and "latency, batch 4" in out
    assert "interleaved" in out and "median of 3 runs" in out and "1 thread," in out and "batch 1 and 4" in out


def test_no_latency_skips_the_timing(pair, capsys):
    _, a, b = pair
    rec = _json(capsys, ["compare", a, b, "--no-latency", "--json"])
    assert rec["latency"] is None and not [k for k in _rows(rec) if k.startswith("latency")]
    assert main(["compare", str(a), str(b), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "latency: not measured" in out and "latency, batch" not in out


def test_models_with_different_inputs_are_one_error_line(pair, tmp_path, capsys, run_error):
    _, a, _ = pair
    other = tmp_path / "wide.safetensors"
    save_model(models.build("lenet300"), other, ModelInfo(arch="lenet300", input_shape=[1, 32, 32], mean=[0.5],
                                                          std=[0.25]))
    line = run_error(capsys, ["compare", a, other, "--no-latency"])
    assert "[1, 28, 28]" in line and "[1, 32, 32]" in line and "same input" in line


@pytest.mark.parametrize("flag", ["--batch-size", "--repeats", "--threads"])
def test_bad_numbers_are_one_error_line(pair, capsys, run_error, flag):
    _, a, b = pair
    assert flag.lstrip("-").replace("-", " ") in run_error(capsys, ["compare", a, b, flag, "0"])


CMP_NET = textwrap.dedent("""
    from torch import nn

    def build(width=16, num_classes=10):
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
""")


def test_a_model_from_outside_the_zoo(tmp_path, monkeypatch, capsys):
    """A small CNN defined here, two plain state dicts (B: half the width), --model module:callable for
    both; no data recorded, so no quality row, and the latency fields present and positive."""
    (tmp_path / "cmp_net.py").write_text(CMP_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cmp_net", raising=False)
    try:
        sys.path.insert(0, str(tmp_path))
        import cmp_net
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    torch.save(cmp_net.build().state_dict(), tmp_path / "a.pt")
    torch.save(cmp_net.build(width=8).state_dict(), tmp_path / "b.pt")
    argv = ["compare", "a.pt", "b.pt", "--model", "cmp_net:build", "--json", *FAST]
    rec = _json(capsys, argv)
    rows = _rows(rec)
    _check_ratios(rec)
    for side, name in (("a", "a.pt"), ("b", "b.pt")):
        totals = _json(capsys, ["profile", name, "--model", "cmp_net:build", "--json"])["totals"]
        assert rows["params"][side] == totals["params"] and rows["macs"][side] == totals["macs"]
    assert rows["params"]["a"] == 16 * 9 + 16 + 16 * 16 * 9 + 16 + 16 * 10 + 10
    assert rows["params"]["b"] == 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 10 + 10
    assert "accuracy" not in rows and rec["quality"].startswith("not measured")
    for n in (1, 4):
        row = rows[f"latency_ms_batch_{n}"]
        assert row["a"] > 0 and row["b"] > 0 and row["ratio"] > 0
    monkeypatch.delitem(sys.modules, "cmp_net", raising=False)


def test_text_models_are_compared_by_fidelity_to_a(tmp_path, capsys):
    """Unlabelled text: B's fidelity to A (the reference), as ``evaluate --reference`` measures it."""
    pytest.importorskip("transformers")
    from hf_files import bert_folder, perturbed_copy, write_sentences
    folder = bert_folder(tmp_path / "bert")
    spec = write_sentences(tmp_path / "s.txt", n=30)
    perturbed_copy(folder, tmp_path / "noisy.safetensors")
    rec = _json(capsys, ["compare", f"hf:{folder}", tmp_path / "noisy.safetensors", "--data", spec,
                         "--seq-len", "16", "--json", *FAST])
    rows = _rows(rec)
    _check_ratios(rec)
    want = _json(capsys, ["evaluate", tmp_path / "noisy.safetensors", "--data", spec, "--reference",
                          f"hf:{folder}", "--json"])["fidelity"]
    assert rows["fidelity_cosine_mean"]["b"] == pytest.approx(want["cosine_mean"], abs=1e-6)
    assert rows["fidelity_cosine_mean"]["a"] == 1.0 and "A is the reference" in rec["quality"]
    assert "accuracy" not in rows and rec["input_kind"] == "tokens" and rec["input_shape"] == [16]
    assert rows["params"]["a"] == rows["params"]["b"] == 37_856 and rows["latency_ms_batch_4"]["b"] > 0
