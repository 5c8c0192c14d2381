"""``deepshrink prune`` on a Hugging Face encoder with unlabelled ``text:FILE`` data: fine-tuning
distils from the unpruned model, and the run reports fidelity to it, never an accuracy."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from deepshrink.cli import main  # noqa: E402
from deepshrink.fidelity import fidelity  # noqa: E402
from deepshrink.io import load_model  # noqa: E402
from deepshrink.pipelines.defaults import Finetune  # noqa: E402
from deepshrink.pipelines.prune import prune_file  # noqa: E402
from deepshrink.prune import PruneConfig  # noqa: E402
from hf_files import bert_folder, write_sentences  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    root = tmp_path_factory.mktemp("prunetext")
    return root, write_sentences(root / "s.txt", n=60)


def test_prune_runs_writes_a_file_that_reloads_and_records_fidelity(text, capsys):
    root, spec = text
    folder = bert_folder(root / "bert")
    out = root / "p.safetensors"
    capsys.readouterr()
    assert main(["prune", f"hf:{folder}", "--data", spec, "--sparsity", "0.5", "--finetune-epochs", "1",
                 "--seq-len", "16", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cosine to the original: mean" in printed and "(test split)" in printed
    assert "accuracy" not in printed
    model, info = load_model(out)
    entry = info.history[-1]
    assert entry["op"] == "prune" and "accuracy" not in entry and info.accuracy is None
    assert entry["fidelity_on"] == "test" and entry["fidelity"]["kind"] == "embedding"
    assert 0 < entry["fidelity"]["cosine_min"] <= entry["fidelity"]["cosine_mean"] <= 1
    assert entry["sparsity"] == pytest.approx(0.5, abs=0.01)
    original, _ = load_model(f"hf:{folder}", seq_len=16)
    ids = torch.randint(1, 22, (4, 16), generator=torch.Generator().manual_seed(0))
    fid = fidelity(model, original, ids)             # the file reloads and runs
    assert 0 < fid.cosine_mean <= 1


def test_fine_tuning_recovers_fidelity_lost_to_pruning(text, tmp_path):
    root, spec = text
    folder = bert_folder(tmp_path / "wide", initializer_range=0.2)   # weights large enough that pruning shows
    cfg = PruneConfig(sparsity=0.8, rule="magnitude", schedule="oneshot", epochs=3, progress=False, verbose=False)
    run = prune_file(f"hf:{folder}", tmp_path / "p.safetensors", cfg, data=spec, seq_len=16,
                     finetune=Finetune(lr=3e-3))   # the text recipe's AdamW, at a rate for a tiny random model
    pruned, after = run.fidelity["pruned"], run.fidelity["after"]
    assert pruned.cosine_mean < 0.9                    # pruning alone measurably moves the embeddings
    assert after.cosine_mean > pruned.cosine_mean + 0.01
    assert run.result.accuracy_before is None and run.result.accuracy_after is None
    entry = run.info.history[-1]
    assert entry["fidelity_pruned"]["cosine_mean"] == pruned.cosine_mean
    assert entry["fidelity"]["cosine_mean"] == after.cosine_mean


def test_text_defaults_to_reconstruction_then_adamw_distillation(text, tmp_path):
    """Unset, the rule is reconstruct with a one-shot schedule and the text recipe (AdamW, no
    weight decay, warmup); pruned alone it keeps the embeddings much closer than magnitude."""
    root, spec = text
    folder = bert_folder(tmp_path / "wide", initializer_range=0.2)
    quiet = dict(progress=False, verbose=False)
    rec = prune_file(f"hf:{folder}", tmp_path / "r.safetensors", PruneConfig(sparsity=0.7, epochs=1, **quiet),
                     data=spec, seq_len=16)
    mag = prune_file(f"hf:{folder}", tmp_path / "m.safetensors",
                     PruneConfig(sparsity=0.7, rule="magnitude", schedule="oneshot", epochs=0, **quiet),
                     data=spec, seq_len=16)
    entry = rec.info.history[-1]
    assert entry["config"]["rule"] == "reconstruct" and entry["config"]["schedule"] == "oneshot"
    assert entry["config"]["optimizer"] == "adam" and entry["config"]["weight_decay"] == 0.0
    assert entry["config"]["warmup_epochs"] > 0
    assert rec.result.sparsity == pytest.approx(0.7, abs=0.02)
    assert 1 - rec.fidelity["pruned"].cosine_mean < 0.5 * (1 - mag.fidelity["pruned"].cosine_mean)


def test_what_text_cannot_do_is_refused_in_one_line(text, capsys, run_error, tmp_path):
    root, spec = text
    folder = bert_folder(tmp_path / "b")
    out = tmp_path / "p.safetensors"
    base = ["prune", f"hf:{folder}", "--data", spec, "--sparsity", "0.5", "--out", out, "--seq-len", "16"]
    assert "penalty" in run_error(capsys, base + ["--penalty", "l1"])
    assert "teacher" in run_error(capsys, base + ["--teacher", f"hf:{folder}"])
    assert not out.exists()


def test_auto_on_text_scans_by_fidelity_on_the_validation_split(text, tmp_path, capsys):
    root, spec = text
    folder = bert_folder(tmp_path / "wide", initializer_range=0.2)
    out, plots = tmp_path / "p.safetensors", tmp_path / "plots"
    capsys.readouterr()
    assert main(["prune", f"hf:{folder}", "--data", spec, "--sparsity", "0.5", "--auto", "--finetune-epochs", "1",
                 "--seq-len", "16", "--out", str(out), "--plots", str(plots), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "scored by mean cosine to the original" in printed
    scan = json.loads((plots / "sensitivity.json").read_text())
    assert scan["metric"] == "mean cosine to the original" and scan["split"] == "validation"
    assert scan["dense"] == pytest.approx(1.0)                 # the unpruned model against itself
    curves = [c for layer in scan["layers"].values() for c in layer["accuracy"]]
    assert all(0 <= c <= 1 + 1e-9 for c in curves) and min(curves) < 1 - 1e-4   # pruning moved something
    _, info = load_model(out)
    layers = info.history[-1]["layers"]
    assert len(set(round(v, 2) for v in layers.values())) > 1   # per-layer sparsities, not one global figure


def test_kmeans_quantize_on_text_fine_tunes_its_centroids_against_the_original(text, capsys, tmp_path):
    root, spec = text
    folder = bert_folder(tmp_path / "wide", initializer_range=0.2)
    out = tmp_path / "q.safetensors"
    capsys.readouterr()
    assert main(["quantize", f"hf:{folder}", "--data", spec, "--method", "kmeans", "--bits", "2", "--qat-epochs",
                 "3", "--seq-len", "16", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cosine to the original: mean" in printed and "accuracy" not in printed
    _, info = load_model(out)
    entry = info.history[-1]
    assert entry["op"] == "quantize" and "accuracy" not in entry and entry["fidelity_on"] == "test"
    assert entry["fidelity_kmeans"]["cosine_mean"] < 0.9                      # 2-bit sharing shows
    assert entry["fidelity"]["cosine_mean"] >= entry["fidelity_kmeans"]["cosine_mean"]


def test_linear_quantize_on_text_is_smoothed_int8_with_fidelity(text, capsys, tmp_path):
    root, spec = text
    folder = bert_folder(tmp_path / "wide", initializer_range=0.2)
    out = tmp_path / "q8.safetensors"
    capsys.readouterr()
    assert main(["quantize", f"hf:{folder}", "--data", spec, "--seq-len", "16", "--calib", "24", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "smoothed (alpha 0.5)" in printed and "cosine to the original: mean" in printed
    q, info = load_model(out)
    entry = info.history[-1]
    assert entry["op"] == "quantize" and entry["calib"] == 24 and entry["fidelity_on"] == "test"
    assert info.extra["quant"]["placement"] == "swap" and info.extra["quant"]["smoothed"]
    assert entry["fidelity"]["cosine_mean"] >= 0.99
    original, _ = load_model(f"hf:{folder}", seq_len=16)
    ids = torch.randint(5, 22, (6, 16), generator=torch.Generator().manual_seed(0))
    assert fidelity(q, original, ids).cosine_mean >= 0.99                   # the file computes what was measured
    assert main(["quantize", f"hf:{folder}", "--data", spec, "--seq-len", "16", "--smooth-alpha", "off",
                 "--out", str(tmp_path / "plain.safetensors"), "--json", "--no-progress"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["smooth_alpha"] is None and rec["fidelity"]["after"]["cosine_mean"] >= 0.99
    _, info = load_model(tmp_path / "plain.safetensors")
    assert info.extra["quant"]["smoothed"] == []
