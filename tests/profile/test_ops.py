"""Operations that are not layers (deepshrink.profile.ops): functional conv / linear, matmul, bmm,
baddbmm, einsum, attention; unknown ops listed, never zero.

Oracle: ``torch.utils.flop_counter.FlopCounterMode``, PyTorch's own count of the same forward
pass (FLOPs = 2 x MACs for mm, addmm, bmm, baddbmm and convolution); brute force for nonzero MACs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepshrink.profile import profile_model

pytestmark = pytest.mark.usefixtures("one_thread")


def flop_counter_macs(model: nn.Module, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args)
    return fc.get_total_flops() // 2


def _row(prof, name):
    (row,) = [r for r in prof.rows if r.name == name]
    return row


class ForeignCNN(nn.Module):
    """A CNN as another package might write it: one module layer, the rest functional on its own
    parameters (grouped and transposed convolutions, a linear on tokens, einsum attention)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.w2 = nn.Parameter(torch.randn(16, 4, 3, 3) * 0.1)        # grouped conv, 8 -> 16
        self.up = nn.Parameter(torch.randn(16, 4, 2, 2) * 0.1)        # transposed conv, 16 -> 4
        self.proj = nn.Parameter(torch.randn(10, 4))
        self.bias = nn.Parameter(torch.zeros(10))
        self.mix = nn.Parameter(torch.randn(10, 10))

    def forward(self, x):                                             # (N, 3, 8, 8)
        x = F.relu(self.stem(x))
        x = F.conv2d(x, self.w2, stride=2, padding=1, groups=2)       # (N, 16, 4, 4)
        x = F.conv_transpose2d(x, self.up, stride=2)                  # (N, 4, 8, 8)
        x = F.max_pool2d(x, 2)                                        # (N, 4, 4, 4)
        t = F.linear(x.flatten(2).transpose(1, 2), self.proj, self.bias)   # (N, 16, 10)
        a = torch.einsum("bld,bmd->blm", t, t).softmax(-1)            # (N, 16, 16)
        t = torch.baddbmm(a @ t, t, self.mix.expand(t.shape[0], 10, 10))
        return t.mean(1) @ self.mix                                   # (N, 10)


def test_foreign_cnn_matches_flop_counter():
    torch.manual_seed(0)
    model, x = ForeignCNN().eval(), torch.randn(2, 3, 8, 8)
    prof = profile_model(model, x)
    assert prof.totals["macs"] == flop_counter_macs(model, x) > 0
    assert prof.not_counted == {} and all(r.known for r in prof.rows)
    # every parameter counted once, in the row of the op that read it: none left "(not run)"
    assert prof.totals["params"] == sum(p.numel() for p in model.parameters())
    assert not any(r.name == "(not run)" for r in prof.rows)
    conv, up = _row(prof, "conv"), _row(prof, "conv#2")
    assert conv.macs == 2 * 16 * 4 * 4 * (4 * 3 * 3) and conv.params == 16 * 4 * 9
    assert up.macs == 2 * 16 * 4 * 4 * (4 * 2 * 2) and up.params == 16 * 4 * 4
    assert up.output_shape == [2, 4, 8, 8]


def test_functional_linear_nonzero_macs_brute_force():
    torch.manual_seed(0)
    model, x = ForeignCNN().eval(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.proj[torch.rand_like(model.proj) < 0.5] = 0.0
    nnz = int(torch.count_nonzero(model.proj))
    assert 0 < nnz < model.proj.numel()
    prof = profile_model(model, x)
    (fc,) = [r for r in prof.rows if r.type == "matmul" and r.params == model.proj.numel()]
    rows = 2 * 16                                                     # N * tokens
    assert fc.macs == rows * 4 * 10
    # brute force: a MAC has a nonzero weight when its weight element is nonzero
    assert fc.nonzero_macs == sum(rows for w in model.proj.flatten() if w != 0) == rows * nnz
    assert fc.nonzero_params == nnz
    # products of two activations have no weight to skip
    assert all(r.nonzero_macs == r.macs for r in prof.rows if r.type == "matmul" and r.params == 0)


class _Call(nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn, self.ps = fn, nn.ParameterList(params)

    def forward(self, *xs):
        return self.fn(*xs, *self.ps)


OPS = {
    "matmul_4d": (lambda a, b: a @ b, [(2, 3, 4, 5), (2, 3, 5, 6)]),
    "matmul_3d_2d": (lambda a, w: a @ w, [(2, 7, 5)], [(5, 3)]),
    "bmm": (torch.bmm, [(3, 4, 5), (3, 5, 2)]),
    "baddbmm": (torch.baddbmm, [(3, 4, 2), (3, 4, 5), (3, 5, 2)]),
    "einsum_qk": (lambda q, k: torch.einsum("bhld,bhsd->bhls", q, k), [(1, 2, 5, 4), (1, 2, 6, 4)]),
    "einsum_mm": (lambda a, b: torch.einsum("ij,jk->ik", a, b), [(3, 4), (4, 5)]),
    "linear_2d": (F.linear, [(5, 8)], [(3, 8), (3,)]),
    "linear_3d": (F.linear, [(2, 5, 8)], [(3, 8)]),
    "conv2d": (lambda x, w: F.conv2d(x, w, stride=2, padding=1), [(2, 3, 9, 9)], [(4, 3, 3, 3)]),
    "conv2d_depthwise": (lambda x, w: F.conv2d(x, w, groups=4), [(1, 4, 6, 6)], [(4, 1, 3, 3)]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=2), [(1, 4, 5, 5)], [(4, 3, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_macs_equal_flop_counter(name):
    fn, inputs, *params = OPS[name]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=g) for s in inputs]
    model = _Call(fn, *[nn.Parameter(torch.randn(s, generator=g)) for s in (params[0] if params else [])])
    prof = profile_model(model, tuple(xs))
    assert prof.totals["macs"] == flop_counter_macs(model, *xs) > 0
    assert prof.not_counted == {}
    assert prof.totals["params"] == sum(p.numel() for p in model.parameters())


def test_vector_products_brute_force():
    # FlopCounterMode has no rule for mv and dot: the oracle is the definition
    a, v = torch.randn(4, 5), torch.randn(5)
    assert profile_model(_Call(lambda a, v: a @ v), (a, v)).totals["macs"] == 4 * 5
    assert profile_model(_Call(torch.dot), (v, v)).totals["macs"] == 5


def test_multi_head_attention_fast_and_slow_paths():
    """nn.MultiheadAttention: self-attention in eval without grad runs one fused op (the fast
    path), whose MACs equal the flop counter's on the slow path (grad enabled: projections, bmm,
    out projection); cross-attention runs the slow path, op by op, under the profiler too."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    n_params = sum(p.numel() for p in mha.parameters())
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    prof = profile_model(mha, (q, q, q))
    (row,) = prof.rows
    assert row.type == "mha" and prof.not_counted == {}
    with FlopCounterMode(display=False) as fc:                          # grad on: the slow path
        mha(q, q, q)
    assert row.macs == fc.get_total_flops() // 2 == 2 * (4 * 5 * 16 * 16 + 4 * 5 * 5 * 4 * 2)
    assert row.params == n_params

    cross = profile_model(mha, (q, kv, kv))
    assert cross.totals["macs"] == flop_counter_macs(mha, q, kv, kv) == 2 * (
        2 * 5 * 16 * 16 + 2 * 7 * 16 * 16 + 4 * 5 * 7 * 4 * 2)
    assert cross.not_counted == {} and cross.totals["params"] == n_params


class _Unusual(nn.Module):
    """A layer whose op has no cost rule, and an op without a rule between layers."""

    class Scan(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=-1)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.scan = self.Scan()

    def forward(self, x):
        y = self.scan(self.fc(x))
        return torch.topk(y, 2).values.sum()


def test_unknown_ops_are_listed_never_silently_zero():
    prof = profile_model(_Unusual(), torch.randn(3, 6))
    assert prof.not_counted == {"aten.cumsum": 1, "aten.topk": 1}
    scan = _row(prof, "scan")
    assert scan.known is False                     # its cost is not known, and says so
    footer = "not counted: aten.cumsum x 1, aten.topk x 1"
    assert prof.footer() == footer
    md = prof.to_markdown()
    assert md.endswith("\n\n" + footer) and "| scan | Scan (?) |" in md
    assert json.loads(prof.to_json())["not_counted"] == {"aten.cumsum": 1, "aten.topk": 1}
    # the known parts are still counted: the linear layer, the final sum
    assert prof.totals["macs"] == 3 * 6 * 6
    assert _row(prof, "sum").additions == 3 * 2 - 1


class _Reshaper(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):                                             # (2, 3, 4)
        y = x.view(6, 4).reshape(2, 3, 4).permute(0, 2, 1).transpose(1, 2).unsqueeze(0).squeeze(0)
        y = y.expand(2, 3, 4)[:, 1:].flatten(1).view(2, 2, 4) + torch.zeros(4) * torch.arange(4)
        return self.fc(y.contiguous())


def test_views_and_creation_are_free_not_unknown():
    prof = profile_model(_Reshaper(), torch.randn(2, 3, 4))
    assert prof.not_counted == {}
    # only the arithmetic gets rows: zeros * arange, the add, the linear layer
    assert [r.type for r in prof.rows] == ["mul", "add", "Linear"]


def test_cli_json_and_text_footer(capsys, monkeypatch):
    from deepshrink.cli import main
    from deepshrink.cli import profile as cli_profile
    from deepshrink.pipelines.profile import ProfileRun

    assert main(["profile", "--model", "lenet5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["not_counted"] == {}
    assert main(["profile", "--model", "lenet5"]) == 0
    assert "not counted" not in capsys.readouterr().out

    prof = profile_model(_Unusual(), torch.randn(3, 6))
    monkeypatch.setattr(cli_profile, "profile_file", lambda *a, **k: ProfileRun("unusual", (3, 6), prof))
    assert main(["profile", "--model", "unusual"]) == 0
    assert "not counted: aten.cumsum x 1, aten.topk x 1" in capsys.readouterr().out
    assert main(["profile", "--model", "unusual", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["not_counted"] == {"aten.cumsum": 1, "aten.topk": 1}
