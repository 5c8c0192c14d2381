"""deepshrink.hf: Hugging Face folders opened offline (``hf:DIR``), the token-id wrapper, and model
files written from them that rebuild without the folder, bit for bit; what is refused (classes
outside transformers, remote code, random heads)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from deepshrink.codec import load_compressed, save_compressed  # noqa: E402
from deepshrink.errors import ConfigError, FormatError, ModelError  # noqa: E402
from deepshrink.hf import DEFAULT_SEQ_LEN, HFModel, build_hf  # noqa: E402
from deepshrink.io import load_model, read_info, save_model  # noqa: E402
from deepshrink.modelfile import example_input, input_kind, model_from_state  # noqa: E402
from hf_files import bert_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[2, 5, 7, 9, 3, 0, 0, 0],      # (2, 8) token ids, pad 0
                    [2, 6, 8, 10, 11, 12, 13, 3]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("hf") / "cls", "BertForSequenceClassification", num_labels=3)


def _reference(folder, cls="BertModel"):
    return getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_folder_opens_as_a_mean_pooled_sentence_encoder(folder):
    model, info = load_model(f"hf:{folder}")
    assert isinstance(model, HFModel) and model.output_kind == "embedding" and not model.training
    assert info.arch == "hf:BertModel" and info.input_shape == [DEFAULT_SEQ_LEN]
    assert info.extra == {"input": "tokens", "tokenizer": str(folder.resolve())} and info.kwargs["pad_id"] == 0
    assert input_kind(info) == "tokens" and example_input(info).dtype == torch.int64
    # oracle: transformers' own model, then mean pooling over the non-pad tokens by hand
    mask = (IDS != 0)
    with torch.no_grad():
        hidden = _reference(folder)(input_ids=IDS, attention_mask=mask.long()).last_hidden_state
        want = torch.stack([hidden[i][mask[i]].mean(0) for i in range(len(IDS))])
        got = model(IDS)
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_head_returns_its_logits(classifier):
    model, info = load_model(f"hf:{classifier}")
    assert info.arch == "hf:BertForSequenceClassification" and model.output_kind == "logits"
    with torch.no_grad():
        want = _reference(classifier, "BertForSequenceClassification")(
            input_ids=IDS, attention_mask=(IDS != 0).long()).logits
        assert torch.equal(model(IDS), want)


@pytest.mark.parametrize("suffix", [".safetensors", ".dsz"])
def test_files_reload_without_the_folder_bit_for_bit(folder, tmp_path, suffix):
    model, info = load_model(f"hf:{folder}", seq_len=16)
    path = tmp_path / f"bert{suffix}"
    (save_model if suffix == ".safetensors" else save_compressed)(model, path, info)
    back, binfo = load_model(path)                      # no --model, no folder, no trust
    assert binfo.arch == "hf:BertModel" and binfo.input_shape == [16] and binfo.extra == info.extra
    assert _same_state(model, back)
    with torch.no_grad():
        assert torch.equal(back(IDS), model(IDS))


def test_pruned_and_kmeans_shared_bert_round_trips(folder, tmp_path):
    from deepshrink.prune import prune_
    from deepshrink.quant import kmeans_quantize_

    model, info = load_model(f"hf:{folder}")
    prune_(model, 0.5)
    kmeans_quantize_(model)
    assert any(k.endswith("_mask") for k in model.state_dict())
    assert any(k.endswith("_codebook") for k in model.state_dict())
    save_model(model, tmp_path / "p.safetensors", info)
    save_compressed(model, tmp_path / "p.dsz", info)
    with torch.no_grad():
        want = model(IDS)
        for back in (load_model(tmp_path / "p.safetensors")[0], load_compressed(tmp_path / "p.dsz")):
            assert _same_state(model, back)
            assert torch.equal(back(IDS), want)


def test_model_option_names_the_architecture_of_a_plain_state_dict(folder, tmp_path):
    """``--model hf:DIR`` with a state dict in transformers' own key names (no ``model.`` prefix)."""
    model, _ = load_model(f"hf:{folder}")
    hf_state = {k.removeprefix("model."): v.clone() for k, v in model.state_dict().items()}
    torch.save(hf_state, tmp_path / "weights.pt")
    back, info = load_model(tmp_path / "weights.pt", arch=f"hf:{folder}")
    assert info.arch == "hf:BertModel" and _same_state(model, back)


def test_seq_len_and_tokenizer_options(folder, tmp_path):
    _, info = load_model(f"hf:{folder}", seq_len=32, tokenizer=folder)
    assert info.input_shape == [32]
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        load_model(f"hf:{folder}", seq_len=513)
    with pytest.raises(ConfigError, match="--seq-len"):
        load_model(f"hf:{folder}", seq_len=0)


def _file_with(tmp_path, folder, **changes) -> str:
    model, info = load_model(f"hf:{folder}")
    save_model(model, tmp_path / "m.safetensors", info)
    raw = json.loads(info.to_json())
    raw.update(changes)
    blob = (tmp_path / "m.safetensors").read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"]["deepshrink"] = json.dumps(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "x.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    return str(tmp_path / "x.safetensors")


@pytest.mark.parametrize("arch", ["hf:AutoConfig", "hf:PreTrainedTokenizerBase", "hf:Pipeline"])
def test_a_class_that_is_not_a_transformers_model_is_refused(folder, tmp_path, arch):
    with pytest.raises(ModelError, match="not a model class of transformers"):
        load_model(_file_with(tmp_path, folder, arch=arch))


@pytest.mark.parametrize("arch", ["hf:os.system", "hf:", "hf:transformers.BertModel"])
def test_a_dotted_or_empty_class_name_is_refused_when_read(folder, tmp_path, arch):
    with pytest.raises(FormatError, match="'arch'"):
        read_info(_file_with(tmp_path, folder, arch=arch))


def test_a_remote_code_config_is_refused(folder, tmp_path):
    _, info = load_model(f"hf:{folder}")
    config = dict(info.kwargs["config"], auto_map={"AutoModel": "evil.EvilModel"})
    with pytest.raises(FormatError, match="auto_map"):
        read_info(_file_with(tmp_path, folder, kwargs={"config": config, "pad_id": 0}))
    with pytest.raises(ModelError, match="auto_map"):                 # Python callers building directly
        build_hf("BertModel", {"config": config}, "here")
    remote = tmp_path / "remote"
    bert_folder(remote)
    cfg = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling.Evil"}}))
    with pytest.raises(ModelError, match="auto_map"):
        load_model(f"hf:{remote}")


@pytest.mark.parametrize("kwargs, field", [({"config": {}, "code": "x"}, "unknown keys"),
                                           ({"config": []}, "kwargs.config"),
                                           ({"config": {}, "pad_id": -1}, "pad_id")])
def test_bad_hf_kwargs_are_refused_when_read(folder, tmp_path, kwargs, field):
    with pytest.raises(FormatError, match=field):
        read_info(_file_with(tmp_path, folder, kwargs=kwargs))


def test_input_kind_and_tokenizer_fields_are_checked(folder, tmp_path):
    with pytest.raises(FormatError, match="extra.input"):
        read_info(_file_with(tmp_path, folder, extra={"input": "audio"}))
    with pytest.raises(FormatError, match="extra.tokenizer"):
        read_info(_file_with(tmp_path, folder, extra={"tokenizer": 3}))


def test_a_config_that_asks_for_too_much_is_refused_before_allocation(folder):
    _, info = load_model(f"hf:{folder}")
    config = dict(info.kwargs["config"], vocab_size=1 << 27, hidden_size=64)
    with pytest.raises(ModelError, match="more than"):
        build_hf("BertModel", {"config": config}, "here")


def test_a_checkpoint_without_the_head_is_refused(folder, tmp_path):
    """A BertModel checkpoint opened as a classifier would get a random head: refused."""
    other = bert_folder(tmp_path / "nohead")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(ModelError, match="lacks weights"):
        load_model(f"hf:{other}")


def test_folder_errors_are_one_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        load_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ModelError, match="no config.json"):
        load_model(f"hf:{tmp_path}")
    bare = bert_folder(tmp_path / "noweights", tokenizer=False)
    (bare / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load BertModel"):
        load_model(f"hf:{bare}")


def test_missing_transformers_is_one_clear_error(folder, tmp_path, monkeypatch):
    model, info = load_model(f"hf:{folder}")
    save_model(model, tmp_path / "m.safetensors", info)
    monkeypatch.setitem(sys.modules, "transformers", None)     # import transformers -> ImportError
    with pytest.raises(ModelError, match=r"pip install 'deepshrink\[hf\]'"):
        load_model(tmp_path / "m.safetensors")


def test_resized_hf_model_dry_run_uses_token_ids(folder):
    """model_from_state's dry run (after a tensor changed shape) feeds int64 ids, not float zeros:
    a resize that fits passes, one that does not is one ModelError."""
    model, info = load_model(f"hf:{folder}")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key in ("model.pooler.dense.weight", "model.pooler.dense.bias"):   # nothing reads the pooler here
        state[key] = state[key][:16]
    assert model_from_state(info, state, False, "pruned").model.pooler.dense.out_features == 16
    bad = {k: v.clone() for k, v in model.state_dict().items()}
    key = "model.encoder.layer.0.intermediate.dense.weight"     # 64 -> 48 outputs; output.dense reads 64
    bad[key], bad[key.replace("weight", "bias")] = bad[key][:48], bad[key.replace("weight", "bias")][:48]
    with pytest.raises(ModelError, match="do not fit together"):
        model_from_state(info, bad, False, "pruned")


def test_a_config_with_absurdly_many_layers_is_refused_before_building(folder):
    _, info = load_model(f"hf:{folder}")
    with pytest.raises(ModelError, match="num_hidden_layers = 1000000"):
        build_hf("BertModel", {"config": dict(info.kwargs["config"], num_hidden_layers=10 ** 6)}, "here")


def test_encoder_batches_are_cut_to_their_sentences_lengths_without_changing_embeddings(folder):
    """Rows grouped by length and each group's trailing padding dropped: the same embeddings, in
    input order, as one call per sentence and as the full padded batch; traced graphs keep the
    full length."""
    model, _ = load_model(f"hf:{folder}", seq_len=16)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 22, (70, 16), generator=gen)           # more rows than one length group
    lengths = torch.randint(1, 17, (70,), generator=gen)
    for i, n in enumerate(lengths.tolist()):
        ids[i, n:] = 0                                             # pad id 0
    with torch.no_grad():
        out = model(ids)
        one_by_one = torch.cat([model._call(ids[i:i + 1]) for i in range(len(ids))])
        full = model._call(ids)
        short = ids[:3].clone()
        short[:, 4:] = 0                                           # the traced example holds 4 tokens a row
        traced = torch.jit.trace(model, short)
        replayed = traced(ids[:6])                                 # longer sentences through the same graph
    torch.testing.assert_close(out, one_by_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(replayed, full[:6], atol=1e-5, rtol=1e-5)
