"""profile_model on a Hugging Face transformer: a tiny random-weight ``transformers.BertModel``
(no weights downloaded), token ids in.

Oracle: ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 x MACs). With eager attention
(``q @ k^T``, softmax, ``weights @ v``) it sees every product and the totals agree exactly. With
SDPA on CPU the attention runs as ``aten._scaled_dot_product_flash_attention_for_cpu``, for
which torch's flop counter has no rule: it undercounts by exactly our ``sdpa`` rows, whose MACs
are checked against its own formula ``sdpa_flop_count`` and against the eager model.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from deepshrink.profile import profile_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

HIDDEN, HEADS, LAYERS, SEQ = 32, 2, 2, 9
HEAD_DIM = HIDDEN // HEADS
IDS = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(1))   # int64 token ids


def tiny_bert(attn: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=64, attn_implementation=attn)
    return transformers.BertModel(cfg).eval()


def flop_counter_macs(model, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args)
    return fc.get_total_flops() // 2


def linear_macs(model) -> int:
    """The nn.Linear layers' MACs on IDS: every token through the encoder, one through the pooler."""
    return sum((1 if name.startswith("pooler") else SEQ) * m.in_features * m.out_features
               for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))


def test_eager_bert_matches_flop_counter_and_shows_attention_products():
    model = tiny_bert("eager")
    prof = profile_model(model, IDS)
    t = prof.totals
    assert t["macs"] == flop_counter_macs(model, IDS)
    assert prof.not_counted == {} and all(r.known for r in prof.rows)
    assert t["params"] == sum(p.numel() for p in model.parameters())
    assert not any(r.name == "(not run)" for r in prof.rows)
    per_product = HEADS * SEQ * SEQ * HEAD_DIM
    for i in range(LAYERS):
        attn = f"encoder.layer.{i}.attention.self"          # attributed to the attention module
        qk, av = (next(r for r in prof.rows if r.name == f"{attn}.{n}") for n in ("matmul", "matmul#2"))
        assert qk.macs == av.macs == per_product
        assert qk.output_shape == [HEADS, SEQ, SEQ] and qk.nonzero_macs == qk.macs   # bmm: (batch * heads, L, S)
        assert any(r.name == f"{attn}.softmax" for r in prof.rows)
    assert t["macs"] == linear_macs(model) + LAYERS * 2 * per_product
    # the layers without a counter (Embedding, LayerNorm) cost what their ops cost
    ln = next(r for r in prof.rows if r.name == "embeddings.LayerNorm")
    assert ln.type == "LayerNorm" and ln.additions > 0 and ln.params == 2 * HIDDEN


def test_sdpa_bert_counts_the_fused_attention():
    model = tiny_bert("sdpa")
    prof = profile_model(model, IDS)
    assert prof.not_counted == {}
    rows = [r for r in prof.rows if r.type == "sdpa"]
    assert [r.name for r in rows] == [f"encoder.layer.{i}.attention.self.sdpa" for i in range(LAYERS)]
    shape = (1, HEADS, SEQ, HEAD_DIM)
    for r in rows:
        assert r.macs == sdpa_flop_count(shape, shape, shape) // 2 == 2 * HEADS * SEQ * SEQ * HEAD_DIM
        assert r.input_shape == list(shape)
    total = prof.totals["macs"]
    assert total == profile_model(tiny_bert("eager"), IDS).totals["macs"]
    sdpa_macs = sum(r.macs for r in rows)
    assert flop_counter_macs(model, IDS) in (total, total - sdpa_macs)   # no CPU-flash rule in torch's counter
    # the math kernel (matmuls torch's counter sees) agrees with the fused count
    with sdpa_kernel(SDPBackend.MATH):
        assert flop_counter_macs(model, IDS) == total == profile_model(model, IDS).totals["macs"]


def test_bert_profile_table_and_json_name_the_attention():
    prof = profile_model(tiny_bert("sdpa"), IDS)
    md = prof.to_markdown()
    assert "| encoder.layer.0.attention.self.sdpa | sdpa |" in md and "not counted" not in md
    d = prof.to_dict()
    assert d["not_counted"] == {} and d["input_shape"] == [1, SEQ]
    assert d["totals"]["macs"] == prof.totals["macs"]
