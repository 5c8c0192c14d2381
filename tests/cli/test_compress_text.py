"""``deepshrink compress`` and ``sensitivity`` on a Hugging Face encoder with unlabelled
``text:FILE`` data: every choice is scored by fidelity to the dense model on the validation split,
both fine-tunings distil from it, and the .dsz decodes bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from deepshrink.cli import main  # noqa: E402
from deepshrink.codec import load_compressed  # noqa: E402
from deepshrink.compress import CompressConfig, compress  # noqa: E402
from deepshrink.data import load as load_data  # noqa: E402
from deepshrink.fidelity import fidelity  # noqa: E402
from deepshrink.hf import load_tokenizer  # noqa: E402
from deepshrink.io import load_model  # noqa: E402
from hf_files import bert_folder, write_sentences  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(prune_epochs=1, centroid_epochs=1, progress=False, verbose=False)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("compresstext")
    return bert_folder(root / "bert", initializer_range=0.2), write_sentences(root / "s.txt", n=80)


def test_compress_on_text_scores_fidelity_and_writes_a_file_that_decodes(bert, tmp_path, capsys):
    folder, spec = bert
    out = tmp_path / "b.dsz"
    capsys.readouterr()
    code = main(["compress", f"hf:{folder}", "--data", spec, "--seq-len", "16", "--sparsity", "0.5",
                 "--max-drop", "50", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "validation mean cosine to the original 100.00%" in printed
    assert "test mean cosine to the original" in printed and "samples" in printed
    decoded = load_compressed(out)
    original, _ = load_model(f"hf:{folder}", seq_len=16)
    ids = torch.randint(5, 22, (6, 16), generator=torch.Generator().manual_seed(0))
    assert 0.5 < fidelity(decoded, original, ids).cosine_mean <= 1
    assert "mean cosine to the original" in (tmp_path / "b.report.md").read_text()


def test_compress_api_on_text_reports_what_its_figures_are(bert):
    folder, spec = bert
    model, _ = load_model(f"hf:{folder}", seq_len=16)
    ds = load_data(spec, tokenizer=load_tokenizer(folder), seq_len=16)
    res = compress(model, ds, CompressConfig(sparsity=0.6, max_drop=100, allocation="global", **FAST))
    assert res.metric == "mean cosine to the original"
    assert res.accuracy_before == pytest.approx(1.0) and res.val_accuracy_before == pytest.approx(1.0)
    assert 0 < res.accuracy_after < 1 and 0 < res.val_accuracy_after < 1
    reference, _ = load_model(f"hf:{folder}", seq_len=16)
    assert res.accuracy_after == pytest.approx(fidelity(res.model, reference, ds.test.x).cosine_mean)
    assert res.to_dict()["metric"] == res.metric


def test_sensitivity_on_text_is_scored_by_fidelity(bert, tmp_path, capsys):
    folder, spec = bert
    capsys.readouterr()
    assert main(["sensitivity", f"hf:{folder}", "--data", spec, "--seq-len", "16", "--out-dir", str(tmp_path),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean cosine to the original (%) on the validation split" in printed and "samples held out" in printed
    scan = json.loads((tmp_path / "sensitivity.json").read_text())
    assert scan["metric"] == "mean cosine to the original" and scan["dense"] == pytest.approx(1.0)


def test_compress_at_sparsity_zero_shares_weights_without_pruning(bert):
    """``--sparsity 0``: no pruning phase (and no scan), k-means and entropy coding only; every
    weight keeps a value from its layer's codebook and none is forced to zero."""
    folder, spec = bert
    model, _ = load_model(f"hf:{folder}", seq_len=16)
    ds = load_data(spec, tokenizer=load_tokenizer(folder), seq_len=16)
    res = compress(model, ds, CompressConfig(sparsity=0, max_drop=100, fc_bits=6, embedding_bits=4, **FAST))
    assert res.scan is None and len(res.attempts) == 1 and res.attempts[0].sparsity < 0.01
    assert res.val_accuracy_after > 0.9
    fc = next(m for m in res.model.modules() if isinstance(m, torch.nn.Linear))
    assert not hasattr(fc, "weight_mask") or bool(fc.weight_mask.all())
    assert fc.weight.unique().numel() <= 2 ** 6


def test_text_defaults_share_weights_without_pruning_under_a_cosine_budget(bert, tmp_path, capsys):
    """Unlabelled text resolves the data-dependent defaults to TEXT_DEFAULTS (no pruning, 7-bit
    Linear and 4-bit embedding codebooks, 3 points of cosine); labelled images keep Deep Compression's."""
    from deepshrink.compress import LABELLED_DEFAULTS, TEXT_DEFAULTS
    assert {k: getattr(CompressConfig().resolved(False), k) for k in TEXT_DEFAULTS} == TEXT_DEFAULTS
    assert {k: getattr(CompressConfig().resolved(True), k) for k in LABELLED_DEFAULTS} == LABELLED_DEFAULTS
    assert CompressConfig(sparsity=0.5).resolved(False).sparsity == 0.5          # what the user gave stays
    folder, spec = bert
    out = tmp_path / "d.dsz"
    capsys.readouterr()
    code = main(["compress", f"hf:{folder}", "--data", spec, "--seq-len", "16", "--centroid-epochs", "0",
                 "--out", str(out), "--json", "--no-progress"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["max_drop"] == TEXT_DEFAULTS["max_drop"] and got["sparsity"] < 0.01
    assert code == (0 if got["within_budget"] else 1)
    rec = load_compressed(out).deepshrink_info.history[-1]
    assert rec["config"]["fc_bits"] == 7 and rec["config"]["embedding_bits"] == 4 and rec["config"]["sparsity"] == 0
