"""``deepshrink evaluate`` / ``profile`` on a Hugging Face folder (``hf:DIR``) and ``text:FILE``
data: fidelity to the original instead of an accuracy that unlabelled text cannot give."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from deepshrink.cli import main  # noqa: E402
from deepshrink.io import load_model  # noqa: E402
from hf_files import bert_folder, perturbed_copy, write_sentences  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """``(folder, text spec, perturbed copy as a deepshrink file)``."""
    root = tmp_path_factory.mktemp("hfcli")
    folder = bert_folder(root / "bert")
    spec = write_sentences(root / "s.txt", n=60)
    return folder, spec, perturbed_copy(folder, root / "noisy.safetensors")


def _json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_unlabelled_text_without_reference_says_so(bert, capsys, run_error):
    folder, spec, _ = bert
    line = run_error(capsys, ["evaluate", f"hf:{folder}", "--data", spec])
    assert "no labels" in line and "--reference" in line


def test_reference_to_itself_is_cosine_one(bert, capsys):
    folder, spec, _ = bert
    rec = _json(capsys, ["evaluate", f"hf:{folder}", "--data", spec, "--reference", f"hf:{folder}", "--json"])
    assert rec["accuracy"] is None and rec["labelled"] is False and rec["images"] == 6
    fid = rec["fidelity"]
    assert fid["kind"] == "embedding" and fid["cosine_mean"] == 1.0 and fid["cosine_min"] == 1.0


def test_perturbed_file_is_measured_against_the_folder(bert, capsys):
    folder, spec, noisy = bert
    rec = _json(capsys, ["evaluate", noisy, "--data", spec, "--reference", f"hf:{folder}", "--json"])
    assert 0 < rec["fidelity"]["cosine_min"] <= rec["fidelity"]["cosine_mean"] < 1
    capsys.readouterr()
    assert main(["evaluate", str(noisy), "--data", spec, "--reference", f"hf:{folder}"]) == 0
    out = capsys.readouterr().out
    assert "fidelity to hf:" in out and "mean cosine" in out and "accuracy" not in out


def test_classifier_reports_agreement_and_kl(tmp_path, capsys):
    folder = bert_folder(tmp_path / "cls", "BertForSequenceClassification", num_labels=3)
    spec = write_sentences(tmp_path / "s.txt", n=30)
    rec = _json(capsys, ["evaluate", f"hf:{folder}", "--data", spec, "--reference", f"hf:{folder}", "--json",
                         "--seq-len", "12"])
    fid = rec["fidelity"]
    assert fid["kind"] == "logits" and fid["agreement"] == 1.0 and fid["kl_mean"] == 0.0


def test_profile_takes_token_ids(bert, capsys):
    folder, _, noisy = bert
    rec = _json(capsys, ["profile", "--model", f"hf:{folder}", "--seq-len", "16", "--json"])
    assert rec["input_shape"] == [1, 16] and rec["totals"]["params"] == 37_856   # BertModel's own count
    assert _json(capsys, ["profile", noisy, "--json"])["input_shape"] == [1, 16]


def test_errors_are_one_line(bert, capsys, run_error, tmp_path, write_npz):
    folder, spec, _ = bert
    npz = write_npz(tmp_path / "d.npz", n_train=8, n_test=4)
    assert "text data" in run_error(capsys, ["evaluate", f"hf:{folder}", "--data", npz, "--reference",
                                             f"hf:{folder}"])
    assert "--seq-len" in run_error(capsys, ["evaluate", f"hf:{folder}", "--seq-len", "0", "--data", spec])
    assert "no such folder" in run_error(capsys, ["evaluate", f"hf:{tmp_path / 'none'}", "--data", spec])


def test_commands_that_need_labels_refuse_text_instead_of_a_placeholder_accuracy(bert, capsys, run_error, tmp_path):
    folder, spec, _ = bert
    # prune and quantize work on text, by distillation and fidelity (tests/cli/test_prune_text.py); QAT needs labels
    line = run_error(capsys, ["quantize", f"hf:{folder}", "--data", spec, "--qat-epochs", "1",
                              "--out", tmp_path / "q.safetensors"])
    assert "no labels" in line and "--method kmeans" in line
    assert not (tmp_path / "q.safetensors").exists()
    assert "--reference" in run_error(capsys, ["export", f"hf:{folder}", "--check", "8", "--onnx", tmp_path / "b.onnx"])


def test_export_of_a_text_model_takes_token_ids(bert, capsys, tmp_path):
    import numpy as np
    import onnxruntime as ort

    folder, _, _ = bert
    out = tmp_path / "b.onnx"
    assert main(["export", f"hf:{folder}", "--seq-len", "16", "--onnx", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(int64)"
    ids = np.array([[2, 5, 6, 7, 3] + [0] * 11], dtype=np.int64)
    model, _ = load_model(f"hf:{folder}", seq_len=16)
    want = model(torch.from_numpy(ids)).detach().numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
    assert np.abs(got - want).max() < 1e-4
