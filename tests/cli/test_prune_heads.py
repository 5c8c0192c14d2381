"""``deepshrink prune-heads`` on a tiny random-weight BERT folder (4 heads): the written file holds
the head plan as data, loads back to the very outputs of the pruned model, equals the original
with the removed groups silenced, composes a second cut, and refuses bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from deepshrink.cli import main  # noqa: E402
from deepshrink.head_plan import HEAD_PLAN_KEY, HeadPlan, compose_head_plans  # noqa: E402
from deepshrink.io import load_model, read_info, save_model  # noqa: E402
from deepshrink.modelfile import ModelInfo  # noqa: E402
from deepshrink.models import build as build_zoo  # noqa: E402
from deepshrink.pipelines.prune_heads import prune_transformer_file  # noqa: E402
from hf_files import write_sentences, write_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ = 16


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """``(hf:DIR, text:FILE)``: a 2-block, 4-head BERT saved with its tokenizer, and 40 sentences."""
    root = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64)
    transformers.BertModel(cfg).eval().save_pretrained(root / "bert")
    write_tokenizer(root / "bert")
    return f"hf:{root / 'bert'}", write_sentences(root / "s.txt", n=40)


def ids(n: int = 5) -> torch.Tensor:
    x = torch.randint(5, 20, (n, SEQ), generator=torch.Generator().manual_seed(2))
    x[0, 6:] = 0
    return x


def silenced_original(src: str, plan: HeadPlan) -> torch.nn.Module:
    """The unpruned model with the planned-away heads' output columns and neurons' rows zeroed."""
    from deepshrink.head_plan import find_blocks
    model, _ = load_model(src, seq_len=SEQ)
    with torch.no_grad():
        for b in find_blocks(model):
            parts = plan.layers.get(b.name, {})
            for h in set(range(b.num_heads)) - set(parts.get("heads", range(b.num_heads))):
                b.attn_out.weight[:, h * b.head_size:(h + 1) * b.head_size] = 0
            for j in set(range(b.ffn_size)) - set(parts.get("ffn", range(b.ffn_size))):
                b.ffn_in.weight[j], b.ffn_in.bias[j] = 0, 0
    return model


def test_the_file_holds_the_plan_and_loads_back_bit_for_bit(bert, tmp_path):
    src, _ = bert
    out = tmp_path / "p.safetensors"
    run = prune_transformer_file(src, out, 0.3, seq_len=SEQ)
    assert run.macs_after < run.macs_before and run.params_after < run.params_before
    info = read_info(out)
    assert HeadPlan.from_dict(info.extra[HEAD_PLAN_KEY]) == run.plan == run.cut
    assert info.kwargs["config"]["num_attention_heads"] == 4        # the plan cuts the original architecture
    assert info.history[-1]["op"] == "prune_heads" and info.history[-1]["config"]["ratio"] == 0.3
    loaded, _ = load_model(out)
    with torch.no_grad():
        assert torch.equal(loaded(ids()), run.model(ids()))
        torch.testing.assert_close(loaded(ids()), silenced_original(src, run.plan)(ids()), atol=1e-5, rtol=0)
    sizes = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    assert sizes["model.encoder.layer.0.attention.self.query.weight"] == (24, 32)


def test_a_second_cut_composes_into_one_plan(bert, tmp_path):
    src, _ = bert
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    first = prune_transformer_file(src, once, 0.3, seq_len=SEQ)
    second = prune_transformer_file(once, twice, 0.4, criterion="l1")   # floor(0.4 * 3) = 1 head
    assert second.plan == compose_head_plans(first.plan, second.cut)
    assert all(len(p["heads"]) == 2 for p in second.plan.layers.values())
    loaded, _ = load_model(twice)
    with torch.no_grad():
        assert torch.equal(loaded(ids()), second.model(ids()))
        torch.testing.assert_close(loaded(ids()), silenced_original(src, second.plan)(ids()), atol=1e-5, rtol=0)


def test_cli_taylor_on_text_reports_fidelity_on_held_out_sentences(bert, tmp_path, capsys):
    src, text = bert
    out = tmp_path / "t.safetensors"
    capsys.readouterr()
    assert main(["prune-heads", src, "--ratio", "0.3", "--criterion", "taylor", "--data", text, "--seq-len",
                 str(SEQ), "--batches", "2", "--batch-size", "8", "--out", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["command"] == "prune-heads" and got["out"] == str(out)
    assert got["macs_after"] < got["macs_before"]
    fid = got["fidelity"]
    assert fid["kind"] == "embedding" and 0 < fid["cosine_mean"] < 1 and fid["samples"] > 0
    info = read_info(out)
    assert info.history[-1]["config"]["criterion"] == "taylor" and info.data == text
    assert HeadPlan.from_dict(info.extra[HEAD_PLAN_KEY]).to_dict() == got["cut"]
    assert main(["prune-heads", src, "--ratio", "0.2", "--seq-len", str(SEQ), "--out", str(tmp_path / "x.st")]) == 0
    printed = capsys.readouterr().out
    assert "MACs" in printed and "heads kept" in printed


def test_finetune_distils_the_cut_model_back_towards_the_original(bert, tmp_path, capsys):
    src, text = bert
    out = tmp_path / "ft.safetensors"
    capsys.readouterr()
    assert main(["prune-heads", src, "--ratio", "0.5", "--data", text, "--seq-len", str(SEQ), "--finetune-epochs",
                 "3", "--out", str(out), "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    cut, after = got["fidelity_cut"], got["fidelity"]
    assert got["finetune_epochs"] == 3 and cut["samples"] == after["samples"] > 0
    assert after["cosine_mean"] > cut["cosine_mean"]             # distillation recovered part of the cut
    model, info = load_model(out)
    assert info.history[-1]["op"] == "prune_heads" and info.history[-1]["fidelity_cut"] == cut
    run = prune_transformer_file(src, tmp_path / "again.safetensors", 0.5, data=text, seq_len=SEQ,
                                 finetune_epochs=3, progress=False)
    with torch.no_grad():                                        # seeded: the same run gives the same model
        assert torch.equal(run.model(ids()), model(ids()))


def test_bad_input_is_one_error_line(bert, tmp_path, capsys, run_error):
    src, _ = bert
    out = str(tmp_path / "o.safetensors")
    assert "ratio" in run_error(capsys, ["prune-heads", src, "--ratio", "1.5", "--out", out])
    assert "ratio" in run_error(capsys, ["prune-heads", src, "--ratio", "0", "--out", out])
    assert "batch" in run_error(capsys, ["prune-heads", src, "--ratio", "0.3", "--batches", "0", "--out", out])
    assert "--data" in run_error(capsys, ["prune-heads", src, "--ratio", "0.3", "--criterion", "taylor", "--out", out])
    assert "--data" in run_error(capsys, ["prune-heads", src, "--ratio", "0.3", "--finetune-epochs", "1", "--out", out])
    lenet = tmp_path / "lenet.safetensors"
    save_model(build_zoo("lenet300"), lenet, ModelInfo(arch="lenet300"))
    assert "no transformer blocks" in run_error(capsys, ["prune-heads", str(lenet), "--ratio", "0.3", "--out", out])
    assert not (tmp_path / "o.safetensors").exists()
