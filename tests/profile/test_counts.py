"""profile_model and the per-layer counters against hand-computed oracles.

Oracles: Han, Mao & Dally 2016, Table 2 (LeNet-5: 431,080 params, 2,293,000 MACs on 1x28x28;
LeNet-300-100: 266,610 params); the homework of seeds 000/001, problem 2.3 (a 30%-pruned
nn.Linear(1024, 512)); the direct convolution formula N * C_out * H_out * W_out *
(C_in / groups) * k_h * k_w.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.profile import profile_model

X28 = torch.zeros(1, 1, 28, 28)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _row(prof, name):
    (row,) = [r for r in prof.rows if r.name == name]
    return row


# ---------------------------------------------------------------- zoo oracles

def test_lenet5_matches_deep_compression_table():
    torch.manual_seed(0)
    prof = profile_model(models.build("lenet5"), X28)
    t = prof.totals
    assert t["params"] == 431_080
    assert t["macs"] == 2_293_000
    # per layer: conv1 20*24*24*(1*5*5), conv2 50*8*8*(20*5*5), fc1 800*500, fc2 500*10
    assert _row(prof, "conv1").macs == 20 * 24 * 24 * 25 == 288_000
    assert _row(prof, "conv2").macs == 50 * 8 * 8 * 20 * 25 == 1_600_000
    assert _row(prof, "fc1").macs == 400_000
    assert _row(prof, "fc2").macs == 5_000
    # dense: every MAC has a nonzero weight (default init draws no exact zeros)
    assert t["nonzero_macs"] == t["macs"]
    assert t["nonzero_params"] == t["params"]
    assert all(r.known for r in prof.rows)


def test_lenet300_params():
    torch.manual_seed(0)
    prof = profile_model(models.build("lenet300"), X28)
    assert prof.totals["params"] == 266_610
    assert prof.totals["macs"] == 784 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize("name", models.names())
def test_zoo_params_equal_model_parameters(name):
    torch.manual_seed(0)
    model = models.build(name)
    model.train()
    prof = profile_model(model, X28)
    assert prof.totals["params"] == _params(model)
    assert prof.totals["macs"] > 0
    assert all(r.known for r in prof.rows), [r.name for r in prof.rows if not r.known]
    assert not any(r.name == "(not run)" for r in prof.rows)
    assert model.training  # the training flag is restored


# ---------------------------------------------------------------- homework 2.3

def test_homework_linear_pruned_30_percent():
    torch.manual_seed(0)
    fc = nn.Linear(1024, 512)
    x = torch.zeros(1, 1024)
    before = profile_model(fc, x).totals
    assert before["macs"] == 512 * 1024 == 524_288
    assert before["params"] == 512 * 1025 == 524_800
    assert before["nonzero_macs"] == 524_288

    n_zero = round(0.3 * fc.weight.numel())
    assert n_zero == 157_286
    idx = torch.randperm(fc.weight.numel())[:n_zero]
    with torch.no_grad():
        fc.weight.view(-1)[idx] = 0.0
        fc.bias.copy_(torch.rand(512) + 0.5)  # bias all nonzero
    after = profile_model(fc, x).totals
    assert after["macs"] == 524_288           # dense count does not change
    assert after["params"] == 524_800
    assert after["nonzero_macs"] == 367_002
    assert after["nonzero_params"] == 367_514
    assert after["sparsity"] == pytest.approx(n_zero / 524_800)


def test_bare_leaf_model_has_no_not_run_row():
    # regression: a bare layer (module name "") used to be counted twice, once as "(not run)"
    prof = profile_model(nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 6, 6))
    assert [r.name for r in prof.rows] == ["Conv2d"]
    assert prof.totals["params"] == 4 * 3 * 9 + 4


# ---------------------------------------------------------------- convolutions, brute force

CONV_CASES = [
    # cin, cout, k (kh, kw), stride, padding, dilation, groups, bias, N, H, W
    (3, 8, (3, 3), 1, 1, 1, 1, True, 1, 9, 9),
    (4, 8, (3, 3), 2, 1, 1, 2, False, 2, 10, 7),
    (6, 6, (3, 3), 1, 1, 1, 6, True, 1, 8, 8),          # depthwise
    (4, 12, (5, 3), (2, 1), (2, 0), 1, 4, True, 1, 11, 9),
    (8, 4, (3, 3), 1, 2, 2, 1, False, 3, 9, 9),         # dilated
    (6, 9, (2, 2), 3, 0, (2, 1), 3, True, 1, 13, 12),
]


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,bias,N,H,W", CONV_CASES)
def test_conv_macs_brute_force(cin, cout, k, stride, pad, dil, groups, bias, N, H, W):
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups=groups, bias=bias)
    x = torch.randn(N, cin, H, W)
    y = conv(x)
    _, _, Ho, Wo = y.shape
    expected = N * cout * Ho * Wo * (cin // groups) * k[0] * k[1]

    row = profile_model(conv, x).rows[0]
    assert row.output_shape == list(y.shape)
    assert row.macs == expected
    assert row.multiplications == expected
    outputs = y.numel()
    assert row.additions == expected - outputs + (outputs if bias else 0)
    # homework definition: 2 reads (input, weight) per MAC, one write per output
    assert row.memory_reads == 2 * expected
    assert row.memory_writes == outputs
    assert row.min_memory_reads == x.numel() + sum(p.numel() for p in conv.parameters())
    assert row.nonzero_macs == expected

    # zero some weights: nonzero MACs = output positions * nonzero weights
    with torch.no_grad():
        mask = torch.rand_like(conv.weight) < 0.4
        conv.weight[mask] = 0.0
    nnz = int(torch.count_nonzero(conv.weight))
    assert 0 < nnz < conv.weight.numel()
    row = profile_model(conv, x).rows[0]
    assert row.macs == expected
    assert row.nonzero_macs == N * Ho * Wo * nnz
    assert row.nonzero_params == nnz + (int(torch.count_nonzero(conv.bias)) if bias else 0)


def test_linear_on_3d_input_counts_every_row():
    fc = nn.Linear(6, 5)
    prof = profile_model(fc, torch.zeros(2, 3, 6))
    assert prof.totals["macs"] == 2 * 3 * 6 * 5
    assert prof.rows[0].memory_writes == 2 * 3 * 5


# ---------------------------------------------------------------- graph structure

def test_resnet20_residual_adds_are_rows():
    torch.manual_seed(0)
    prof = profile_model(models.build("resnet20"), X28)
    adds = [r for r in prof.rows if r.type == "add"]
    assert len(adds) == 9                       # one per basic block
    assert adds[0].name == "layer1.0.add"
    for r in adds:
        n = 1
        for d in r.output_shape:
            n *= d
        assert r.additions == n
        assert r.macs == 0
        assert r.memory_reads == 2 * n and r.memory_writes == n


def test_mobilenetv2_adds_only_where_shapes_match():
    torch.manual_seed(0)
    model = models.build("mobilenetv2")
    prof = profile_model(model, X28)
    adds = [r.name for r in prof.rows if r.type == "add"]
    with_res = [f"blocks.{i}.add" for i, b in enumerate(model.blocks) if b.use_res]
    assert adds == with_res and adds


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.unused = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_module_called_twice_and_not_run_rows():
    torch.manual_seed(0)
    model = _Twice()
    prof = profile_model(model, torch.zeros(4, 8))
    names = [r.name for r in prof.rows]
    assert "fc" in names and "fc#2" in names
    assert _row(prof, "fc").macs == _row(prof, "fc#2").macs == 4 * 8 * 8
    # the shared parameters are stored once: the repeat row holds none
    assert _row(prof, "fc").params == 72 and _row(prof, "fc#2").params == 0
    not_run = _row(prof, "(not run)")
    assert not_run.params == 3 * 2 + 2 and not_run.macs == 0
    assert prof.totals["params"] == _params(model) == 72 + 8
    assert prof.totals["macs"] == 2 * 4 * 8 * 8


def test_tied_weights_counted_once():
    a, b = nn.Linear(5, 5, bias=False), nn.Linear(5, 5, bias=False)
    b.weight = a.weight
    model = nn.Sequential(a, nn.ReLU(), b)
    prof = profile_model(model, torch.zeros(1, 5))
    assert prof.totals["params"] == _params(model) == 25
    assert prof.totals["macs"] == 50


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.act = nn.Softplus()      # no layer counter: costed by its op (elementwise)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        y = self.conv(x)
        z = torch.cat([y, y * 2.0], dim=1)
        return self.pool(self.act(z))


def test_cat_mul_unknown_and_adaptive_max_pool():
    prof = profile_model(_Mixed(), torch.zeros(1, 2, 4, 4))
    types = [r.type for r in prof.rows]
    assert types == ["Conv2d", "mul", "cat", "Softplus", "AdaptiveMaxPool2d"]
    mul, cat, soft, pool = prof.rows[1:]
    assert mul.multiplications == 3 * 16 and mul.additions == 0
    assert cat.memory_writes == 6 * 16 and cat.additions == 0
    # no counter for Softplus: its row sums its ops' costs (aten.softplus, elementwise traffic)
    assert soft.known is True and (soft.memory_reads, soft.memory_writes) == (96, 96) and soft.macs == 0
    assert prof.not_counted == {} and "not counted" not in prof.to_markdown()
    # regression: AdaptiveMaxPool2d has no kernel_size; its window is the whole map here
    assert pool.memory_reads == 16 * 6 and pool.memory_writes == 6


# ---------------------------------------------------------------- bits, totals, output

def test_weight_bits_attribute():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    model[0].weight_bits = 4
    prof = profile_model(model, torch.zeros(1, 10))
    q, f = _row(prof, "0"), _row(prof, "2")
    assert q.weight_bits == 4
    assert q.bits == 60 * 4 + 6 * 32          # the weight at 4 bits, the bias as held (fp32)
    assert f.weight_bits == 32 and f.bits == (12 + 2) * 32
    assert prof.totals["bits"] == q.bits + f.bits
    assert prof.totals["bytes"] == (q.bits + f.bits + 7) // 8


def test_totals_json_markdown():
    torch.manual_seed(0)
    prof = profile_model(models.build("lenet5"), X28)
    t = prof.totals
    for key in ("params", "nonzero_params", "macs", "memory_accesses", "bytes"):
        assert key in t
    assert t["memory_accesses"] == t["memory_reads"] + t["memory_writes"]
    assert t["bytes"] == 431_080 * 4
    back = json.loads(prof.to_json())
    assert back["totals"]["macs"] == 2_293_000
    assert len(back["rows"]) == len(prof.rows)
    assert back["input_shape"] == [1, 1, 28, 28]
    md = prof.to_markdown()
    assert "| **total** |" in md and "2,293,000" in md
    assert "431,080" in prof.summary()


# ---------------------------------------------------------------- CLI


