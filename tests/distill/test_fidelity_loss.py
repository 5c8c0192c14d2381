"""The unlabelled fine-tuning loss (deepshrink/distill/fidelity_loss.py) against hand computations:
cosine and MSE written out per row, KL summed in a plain loop; labels never read."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepshrink.data import Split
from deepshrink.distill.fidelity_loss import cached_fidelity_loss, fidelity_distance, fidelity_loss
from deepshrink.errors import ConfigError


def _hand_cosine(s, t):
    out = []
    for a, b in zip(s.tolist(), t.tolist()):
        dot = sum(x * y for x, y in zip(a, b))
        out.append(1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))))
    return sum(out) / len(out)


def _hand_kl(s, t, temp):
    rows = []
    for a, b in zip(s.tolist(), t.tolist()):
        pa = [math.exp(x / temp) for x in a]
        pb = [math.exp(x / temp) for x in b]
        pa, pb = [x / sum(pa) for x in pa], [x / sum(pb) for x in pb]
        rows.append(sum(q * math.log(q / p) for p, q in zip(pa, pb)))   # KL(teacher || student)
    return temp * temp * sum(rows) / len(rows)


def test_embedding_loss_is_one_minus_cosine_plus_mse():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert fidelity_distance("embedding", s, t).item() == pytest.approx(_hand_cosine(s, t), abs=1e-12)
    mse = sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist())) / s.numel()
    got = fidelity_distance("embedding", s, t, mse_weight=0.5).item()
    assert got == pytest.approx(_hand_cosine(s, t) + 0.5 * mse, abs=1e-12)
    assert fidelity_distance("embedding", t, t).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("temp", [1.0, 3.0])
def test_logit_loss_is_kl_of_every_row(temp):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    want = _hand_kl(s.reshape(-1, 4), t.reshape(-1, 4), temp)                # per token rows of (N, L, V)
    assert fidelity_distance("logits", s, t, temperature=temp).item() == pytest.approx(want, abs=1e-12)


class _Encoder(nn.Module):
    output_kind = "embedding"

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)

    def forward(self, ids):
        return self.emb(ids).mean(1)   # (N, 6)


def test_loss_uses_the_frozen_original_and_its_cache_and_never_the_labels():
    torch.manual_seed(0)
    teacher = _Encoder()
    student = _Encoder()
    ids = torch.randint(0, 20, (8, 5))
    split = Split(ids, torch.zeros(8, dtype=torch.long))
    loss_fn = cached_fidelity_loss(teacher, split)
    assert loss_fn.kind == "embedding"
    with torch.no_grad():
        teacher.emb.weight.zero_()                      # the loss holds a copy: later edits do not leak in
    out = student(ids)
    want = fidelity_distance("embedding", out, loss_fn.targets.teacher(ids))
    got = loss_fn(student, out, ids, None)
    assert torch.equal(got, want) and loss_fn.targets.hits == 8 and loss_fn.targets.misses == 0
    got.backward()
    assert student.emb.weight.grad is not None and loss_fn.targets.teacher.emb.weight.grad is None
    live = fidelity_loss(_Encoder(), temperature=2.0)
    assert live.kind == "embedding" and live.targets.cache is None


def test_bad_settings_fail_at_once():
    with pytest.raises(ConfigError, match="output kind"):
        fidelity_loss(_Encoder(), "pooled")
    with pytest.raises(ConfigError, match="temperature"):
        fidelity_loss(_Encoder(), temperature=0)
    with pytest.raises(ConfigError, match="original model"):
        fidelity_loss(None)


def test_dropout_off_zeroes_every_dropout_inside_and_restores_even_after_an_error():
    import pytest as _pytest
    from torch import nn as _nn
    from deepshrink.distill.fidelity_loss import dropout_off
    model = _nn.Sequential(_nn.Linear(4, 4), _nn.Dropout(0.3), _nn.Sequential(_nn.Dropout(0.1)))
    with dropout_off(model) as saved:
        assert saved == {"1": 0.3, "2.0": 0.1}
        assert all(m.p == 0.0 for m in model.modules() if isinstance(m, _nn.Dropout))
        x = torch.randn(8, 4)
        model.train()
        assert torch.equal(model(x), model(x))                      # deterministic in training mode
    assert (model[1].p, model[2][0].p) == (0.3, 0.1)
    with _pytest.raises(RuntimeError):
        with dropout_off(model):
            raise RuntimeError("boom")
    assert (model[1].p, model[2][0].p) == (0.3, 0.1)
