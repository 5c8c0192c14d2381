"""Head and FFN-neuron pruning of a tiny random-weight BERT (2 blocks, 4 heads, hidden 32, FFN 64).

Oracle: the pruned model equals the unpruned one with the removed groups silenced in a copy: a
head's columns of the attention output projection zeroed (its context adds nothing, what
``head_mask`` did in transformers 4), a neuron's intermediate row and bias zeroed (GELU(0) = 0).
Taylor scores are checked against a central difference of the probed output in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from deepshrink.errors import ConfigError, FormatError, ModelError  # noqa: E402
from deepshrink.hf import HFModel  # noqa: E402
from deepshrink.profile import profile_model  # noqa: E402
from deepshrink.prune.transformer import (HeadConfig, HeadPlan, apply_head_plan, choose_kept,  # noqa: E402
                                          compose_head_plans, find_blocks, group_macs, norm_scores,
                                          prune_transformer, taylor_scores)

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ = 16
HEADS, HEAD_DIM, FFN = 4, 8, 64


def tiny_bert(seed: int = 0) -> HFModel:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS,
                                  intermediate_size=FFN)
    return HFModel(transformers.BertModel(cfg).eval(), pad_id=0).eval()


def token_ids(n: int = 4, seed: int = 1) -> torch.Tensor:
    x = torch.randint(1, 100, (n, SEQ), generator=torch.Generator().manual_seed(seed))
    x[1, 10:] = 0          # one padded sentence
    return x


def silenced(model: nn.Module, plan: HeadPlan) -> nn.Module:
    """A copy of the unpruned ``model`` with the groups ``plan`` removes zeroed, not removed."""
    masked = copy.deepcopy(model)
    blocks = {b.name: b for b in find_blocks(masked)}
    with torch.no_grad():
        for name, parts in plan.layers.items():
            b = blocks[name]
            for h in sorted(set(range(b.num_heads)) - set(parts.get("heads", range(b.num_heads)))):
                b.attn_out.weight[:, h * HEAD_DIM:(h + 1) * HEAD_DIM] = 0
            for j in sorted(set(range(b.ffn_size)) - set(parts.get("ffn", range(b.ffn_size)))):
                b.ffn_in.weight[j] = 0
                b.ffn_in.bias[j] = 0
    return masked


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor"])
def test_pruned_model_equals_the_original_with_those_groups_silenced(criterion):
    model, x = tiny_bert(), token_ids()
    original = copy.deepcopy(model)
    plan = prune_transformer(model, HeadConfig(ratio=0.3, criterion=criterion), SEQ, batches=[x[:2], x[2:]])
    assert set(plan.layers) == {"model.encoder.layer.0", "model.encoder.layer.1"}
    for b in find_blocks(model):
        kept = plan.layers[b.name]
        assert len(kept["heads"]) == 3 and b.num_heads == 3
        assert b.attention.num_attention_heads == 3 and b.attention.all_head_size == 3 * HEAD_DIM
        assert [lin.weight.shape[0] for lin in b.qkv] == [24] * 3 and b.attn_out.weight.shape == (32, 24)
        assert b.ffn_in.weight.shape == (len(kept["ffn"]), 32) and b.ffn_out.weight.shape == (32, len(kept["ffn"]))
    with torch.no_grad():
        got, want = model(x), silenced(original, plan)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, original(x), atol=1e-3)      # something was really removed


def _prunable_macs(model: nn.Module) -> int:
    """The profiled MACs of every block's attention (projections and products) and FFN."""
    rows = profile_model(model, torch.ones(1, SEQ, dtype=torch.long)).rows
    parts = []
    for b in find_blocks(model):
        parts += [f"{b.name}.attention.self.", f"{b.name}.attention.output.dense", f"{b.name}.intermediate.dense"]
        parts += [f"{b.name}.output.dense"]
    return sum(r.macs for r in rows if any(r.name.startswith(p) for p in parts))


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_macs_fall_by_about_the_ratio(ratio):
    model = tiny_bert()
    before, total_before = _prunable_macs(model), profile_model(model, torch.ones(1, SEQ, dtype=torch.long)).totals
    block = find_blocks(model)[0]
    head, neuron = group_macs(block, SEQ)
    assert before == 2 * SEQ * (HEADS * head + FFN * neuron)      # the cost model is the profiler's count
    prune_transformer(model, HeadConfig(ratio=ratio), SEQ)
    after = _prunable_macs(model)
    assert abs((before - after) / before - ratio) <= SEQ * neuron / (before / 2)   # within one neuron a block
    total_after = profile_model(model, torch.ones(1, SEQ, dtype=torch.long)).totals
    assert total_before["macs"] - total_after["macs"] == before - after


def test_norm_scores_are_the_norms_of_each_groups_parameters():
    model = tiny_bert()
    b = find_blocks(model)[1]
    heads, ffn = norm_scores([b], 2)[b.name]
    h, rows = 2, slice(2 * HEAD_DIM, 3 * HEAD_DIM)
    parts = [t for lin in b.qkv for t in (lin.weight[rows].flatten(), lin.bias[rows])]
    parts.append(b.attn_out.weight[:, rows].flatten())
    assert heads[h].item() == pytest.approx(torch.cat(parts).double().norm().item(), rel=1e-9)
    j = 17
    neuron = torch.cat([b.ffn_in.weight[j], b.ffn_in.bias[j:j + 1], b.ffn_out.weight[:, j]]).double()
    assert ffn[j].item() == pytest.approx(neuron.norm().item(), rel=1e-9)
    heads1, _ = norm_scores([b], 1)[b.name]
    assert heads1[h].item() == pytest.approx(torch.cat(parts).double().abs().sum().item(), rel=1e-9)


def test_taylor_scores_are_the_squared_derivative_of_the_probed_output_by_the_groups_scale():
    model, x = tiny_bert().double(), token_ids()
    b = find_blocks(model)[0]
    heads, ffn = taylor_scores(model, [b], [x], seed=3)[b.name]
    probe = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(3)).double()

    def probed(scale_group, s: float) -> float:
        m = copy.deepcopy(model)
        with torch.no_grad():
            scale_group(find_blocks(m)[0], s)
            return (m(x) * probe).sum().item()

    def scale_head(blk, s, h=1):
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        for lin in blk.qkv:
            lin.weight[rows] *= s
            lin.bias[rows] *= s
        blk.attn_out.weight[:, rows] *= s

    def scale_neuron(blk, s, j=5):
        blk.ffn_in.weight[j] *= s
        blk.ffn_in.bias[j] *= s
        blk.ffn_out.weight[:, j] *= s

    eps = 1e-4
    for scale, score in ((scale_head, heads[1]), (scale_neuron, ffn[5])):
        derivative = (probed(scale, 1 + eps) - probed(scale, 1 - eps)) / (2 * eps)   # = sum_i w_i g_i
        assert score.item() == pytest.approx(derivative ** 2, rel=1e-5)
    assert (heads > 0).all() and (ffn > 0).all()


def test_choose_keeps_the_highest_scores_and_at_least_one_of_each():
    model = tiny_bert()
    blocks = find_blocks(model)
    scores = {b.name: (torch.tensor([3.0, 1.0, 4.0, 2.0]), torch.arange(FFN, dtype=torch.float64)) for b in blocks}
    kept = choose_kept(blocks, scores, 0.3, SEQ)
    heads, ffn = kept[blocks[0].name]
    assert heads.tolist() == [0, 2, 3] and ffn.tolist() == list(range(FFN - len(ffn), FFN))
    plan = prune_transformer(model, HeadConfig(ratio=0.99), SEQ)
    for parts in plan.layers.values():
        assert len(parts["heads"]) == 1 and len(parts["ffn"]) >= 1
    assert model(token_ids()).shape == (4, 32)


def test_plan_is_plain_data_and_composes():
    plan = HeadPlan({"model.encoder.layer.0": {"heads": [0, 2, 3], "ffn": [1, 4, 5]}})
    assert HeadPlan.from_json(plan.to_json()) == plan
    second = HeadPlan({"model.encoder.layer.0": {"heads": [1, 2]}, "model.encoder.layer.1": {"ffn": [0]}})
    assert compose_head_plans(plan, second).to_dict() == {"layers": {
        "model.encoder.layer.0": {"heads": [2, 3], "ffn": [1, 4, 5]}, "model.encoder.layer.1": {"ffn": [0]}}}
    for bad in ({"layers": {"b": {"heads": [2, 1]}}}, {"layers": {"b": {"heads": [1, 1]}}},
                {"layers": {"b": {"heads": []}}}, {"layers": {"b": {"heads": [True]}}},
                {"layers": {"b": {"rows": [0]}}}, {"layers": []}, []):
        with pytest.raises(FormatError):
            HeadPlan.from_dict(bad)


def test_a_plan_the_model_cannot_take_is_one_model_error():
    with pytest.raises(ModelError, match="does not have"):
        apply_head_plan(tiny_bert(), HeadPlan({"encoder.layer.9": {"heads": [0]}}))
    with pytest.raises(ModelError, match="within"):
        apply_head_plan(tiny_bert(), HeadPlan({"model.encoder.layer.0": {"heads": [0, 4]}}))


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, math.nan, True])
def test_a_ratio_outside_zero_one_is_one_config_error(ratio):
    with pytest.raises(ConfigError, match="ratio"):
        prune_transformer(tiny_bert(), HeadConfig(ratio=ratio), SEQ)


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="no transformer blocks"):
        prune_transformer(nn.Sequential(nn.Linear(4, 4)), HeadConfig(), SEQ)
    with pytest.raises(ConfigError, match="criterion"):
        prune_transformer(tiny_bert(), HeadConfig(criterion="fpgm"), SEQ)
    with pytest.raises(ConfigError, match="needs calibration data"):
        prune_transformer(tiny_bert(), HeadConfig(criterion="taylor"), SEQ)
