"""``text:FILE`` data (deepshrink.text, deepshrink.data.load): lines read within bounds, a
deterministic train/test split, token ids from the model's own tokenizer, no labels."""

from __future__ import annotations

import pytest
import torch

from deepshrink import data
from deepshrink.errors import DataError
from deepshrink.text import MAX_TEXT_BYTES_ENV, read_lines, split_indices


def test_lines_are_stripped_and_blank_ones_skipped(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("  the cat \n\n\t\nsat on the mat\r\n   \nlast line without newline")
    assert read_lines(f) == ["the cat", "sat on the mat", "last line without newline"]


def test_limits_and_bad_files_are_one_data_error(tmp_path, monkeypatch):
    f = tmp_path / "s.txt"
    f.write_text("one\ntwo\nthree\n")
    with pytest.raises(DataError, match="more than 2 sentences"):
        read_lines(f, max_lines=2)
    monkeypatch.setenv(MAX_TEXT_BYTES_ENV, "8")
    with pytest.raises(DataError, match="14 bytes, more than the 8"):
        read_lines(f)
    monkeypatch.setenv(MAX_TEXT_BYTES_ENV, "lots")
    with pytest.raises(DataError, match=MAX_TEXT_BYTES_ENV):
        read_lines(f)
    monkeypatch.delenv(MAX_TEXT_BYTES_ENV)
    (tmp_path / "one.txt").write_text("\n only one \n\n")
    with pytest.raises(DataError, match="needs at least 2"):
        read_lines(tmp_path / "one.txt")
    (tmp_path / "bin.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_lines(tmp_path / "bin.txt")
    with pytest.raises(DataError, match="no such file"):
        read_lines(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_lines(tmp_path)


@pytest.mark.parametrize("n", [2, 3, 10, 57, 1000])
def test_split_is_deterministic_disjoint_and_complete(n):
    train, test = split_indices(n)
    assert len(test) == max(1, n // 10) and len(train) + len(test) == n
    assert sorted(train.tolist() + test.tolist()) == list(range(n))
    again_train, again_test = split_indices(n)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)


def test_text_spec_is_data_not_code():
    assert not data.is_code_spec("text:/tmp/s.txt")
    assert data.spec_from_file(None, "text:s.txt", "m.safetensors") == "text:s.txt"


def test_text_needs_a_tokenizer(tmp_path):
    (tmp_path / "s.txt").write_text("a b\nc d\n")
    with pytest.raises(DataError, match="tokenizer"):
        data.load(f"text:{tmp_path / 's.txt'}")


def test_text_loads_as_unlabelled_token_ids_from_the_models_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    import transformers
    from hf_files import write_sentences, write_tokenizer

    write_tokenizer(tmp_path / "tok")
    spec = write_sentences(tmp_path / "s.txt", n=40)
    ds = data.load(spec, tokenizer=str(tmp_path / "tok"), seq_len=8)
    assert ds.name == spec and not ds.labelled and ds.num_classes == 0
    assert (len(ds.train), len(ds.test)) == (36, 4) and ds.input_shape == (8,)
    assert ds.train.x.dtype == torch.int64 and not ds.train.y.any() and not ds.test.y.any()
    # oracle: the tokenizer itself on the same lines, padded and truncated to 8
    lines = read_lines(tmp_path / "s.txt")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    want = tok(lines, padding="max_length", truncation=True, max_length=8, return_tensors="pt")["input_ids"]
    train, test = split_indices(len(lines))
    assert torch.equal(ds.train.x, want[train]) and torch.equal(ds.test.x, want[test])
    assert (ds.train.x[:, 0] == tok.cls_token_id).all()
    with pytest.raises(DataError, match="no such tokenizer folder"):
        data.load(spec, tokenizer=str(tmp_path / "none"))
