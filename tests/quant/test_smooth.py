"""Asymmetric dynamic activations and SmoothQuant smoothing of module-swapped linear layers:
against a brute-force integer oracle, the float layer, the symmetric grid, and a file round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from deepshrink.errors import ConfigError, FormatError, ModelError
from deepshrink.modelfile import ModelInfo, read_safetensors
from deepshrink.names import META_KEY
from deepshrink.quant import QuantConfig, QuantLinear, load_quantized, quantize_ptq, save_quantized, swap_quantize
from deepshrink.quant.intmath import row_codes, row_codes_asym, weight_codes, zero_point_matmul
from deepshrink.quant.smooth import input_ranges, smooth_factors

pytestmark = pytest.mark.usefixtures("one_thread")


def _outlier_inputs(n: int = 64, k: int = 32, seed: int = 0) -> torch.Tensor:
    """Rows like a transformer's linear inputs: most channels ~N(0, 1), two channels 30x larger,
    plus a one-sided block (GELU-like outputs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    x[:, 3] *= 30
    x[:, 17] = 25 + x[:, 17]
    return x


def test_asymmetric_row_codes_brute_force():
    x = torch.cat([_outlier_inputs(8), F.gelu(torch.randn(4, 32)), torch.zeros(1, 32)])
    for bits in (8, 4):
        q, s, z = row_codes_asym(x, bits)
        qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        assert q.dtype == torch.int8 and z.dtype == torch.int32
        assert int(q.min()) >= qmin and int(q.max()) <= qmax
        for t in range(len(x)):                                        # one row at a time, from the definition
            lo, hi = min(float(x[t].min()), 0.0), max(float(x[t].max()), 0.0)
            scale = max((hi - lo) / (qmax - qmin), 1e-8)
            assert s[t].item() == pytest.approx(scale, rel=1e-6)
            back = s[t] * (q[t].float() - z[t].float())
            assert (back - x[t]).abs().max().item() <= 0.5 * s[t].item() * (1 + 1e-4)
            assert s[t] * (0 - z[t].float()) * 0 == 0                  # zero is on the grid:
            assert torch.round(torch.tensor(0.0) / s[t]) + z[t] == z[t]
        one_sided = F.gelu(torch.randn(16, 32, generator=torch.Generator().manual_seed(3))) + 0.2
        _, s_sym = row_codes(one_sided, bits)
        _, s_asym, _ = row_codes_asym(one_sided, bits)
        assert bool((s_asym < 0.55 * s_sym).all())                     # a one-sided row: about half the step


def test_zero_point_matmul_is_exact():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-128, 128, (9, 40), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (40, 7), generator=g, dtype=torch.int8)
    z = torch.randint(-128, 128, (9,), generator=g, dtype=torch.int32)
    want = (a.long() - z.long()[:, None]) @ b.long()                   # int64, exact
    assert torch.equal(zero_point_matmul(a, z, b).long(), want)


@pytest.mark.parametrize("bits", [8, 4])
def test_asymmetric_twin_equals_the_integer_formula(bits):
    torch.manual_seed(2)
    lin = nn.Linear(32, 6)
    q = swap_quantize(nn.Sequential(lin), QuantConfig(weight_bits=bits))[0]   # the default: a zero point per row
    assert isinstance(q, QuantLinear) and not q.act_symmetric and not q.smoothed
    x = _outlier_inputs(10).reshape(2, 5, 32)
    qw, sw = weight_codes(lin.weight, bits)
    rows = x.reshape(-1, 32)
    lo, hi = rows.amin(1).clamp_max(0), rows.amax(1).clamp_min(0)
    sx = ((hi - lo) / 255).clamp_min(1e-8)
    zx = (-128 - torch.round(lo / sx)).clamp(-128, 127)
    qx = (torch.round(rows / sx[:, None]) + zx[:, None]).clamp(-128, 127)
    acc = (qx.long() - zx.long()[:, None]) @ qw.long().t()            # exact integers
    want = acc.to(torch.int32).float() * sx[:, None] * sw[None, :] + lin.bias
    with torch.no_grad():
        assert torch.equal(q(x).reshape(-1, 6), want)


def test_smooth_factors_follow_the_formula():
    a = torch.tensor([4.0, 0.0, 9.0, 1.0])
    w = torch.tensor([[1.0, 2.0, 0.0, -0.5], [-2.0, 1.0, 0.0, 0.25]])
    s = smooth_factors(a, w, 0.5)
    assert s[0].item() == pytest.approx(2.0 / 2.0 ** 0.5)             # sqrt(4) / sqrt(2)
    assert s[1].item() == 1.0 and s[2].item() == 1.0                   # a silent channel, a zero column
    assert s[3].item() == pytest.approx(1.0 / 0.5 ** 0.5)
    assert torch.allclose(smooth_factors(a, w, 0.0)[[0, 3]], 1 / torch.tensor([2.0, 0.5]))
    with pytest.raises(ConfigError, match="alpha"):
        smooth_factors(a, w, 1.5)
    with pytest.raises(ModelError, match="input channels"):
        smooth_factors(a[:3], w, 0.5)


def test_input_ranges_see_every_row_and_skip_idle_layers():
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(32, 8), "b": nn.Linear(8, 3)})
    model.forward = lambda x: model["a"](x)                            # "b" never runs
    x = _outlier_inputs(40)
    r = input_ranges(model, ["a", "b"], [x[:25], x[25:]])
    assert set(r) == {"a"} and torch.equal(r["a"], x.abs().amax(0))


def test_smoothing_is_exact_in_float_and_wins_on_outliers():
    torch.manual_seed(3)
    lin = nn.Linear(32, 16)
    x = _outlier_inputs(256, seed=4)
    with torch.no_grad():
        ref = lin(x)
    err = {}
    for name, cfg, calib in (("symmetric", QuantConfig(act_symmetric=True), None),
                             ("zero point", QuantConfig(), None),
                             ("zero point + smoothed", QuantConfig(), x[:128])):
        q = swap_quantize(nn.Sequential(lin), cfg, calib)[0]
        assert q.smoothed == (calib is not None)
        with torch.no_grad():
            err[name] = ((q(x[128:]) - ref[128:]).pow(2).mean() / ref[128:].pow(2).mean()).item()
    assert err["zero point"] < err["symmetric"]
    assert err["zero point + smoothed"] < 0.5 * err["zero point"]
    q = swap_quantize(nn.Sequential(lin), QuantConfig(), x[:128])[0]
    s = q.input_smooth
    assert s.shape == (32,) and bool((s > 0).all()) and float(s[3]) > 3 * float(s.median())
    # the layer it computes: (codes * scale) / s, close to W (not to W * s)
    assert torch.equal(q.weight, (q.int_codes().float() * q.weight_scale[:, None]) / s[None, :])
    assert ((q.weight - lin.weight).norm() / lin.weight.norm()).item() < 0.05
    with torch.no_grad():                                              # (x / s)(W s)^T == x W^T in real arithmetic
        assert torch.allclose(F.linear(x / s, lin.weight * s, lin.bias), ref, atol=1e-4)
    no = swap_quantize(nn.Sequential(lin), QuantConfig(smooth_alpha=None), x[:128])[0]
    assert not no.smoothed


def test_bert_smoothed_file_reloads_bit_exact_and_old_files_stay_symmetric(tiny_bert, token_ids, tmp_path,
                                                                          monkeypatch):
    import deepshrink.models as zoo
    monkeypatch.setitem(zoo.REGISTRY, "tiny_bert_smooth", lambda: type(tiny_bert)(tiny_bert.config))
    info = ModelInfo(arch="tiny_bert_smooth", input_shape=[16])
    cfg = QuantConfig(method="swap")
    q = quantize_ptq(tiny_bert, token_ids, cfg)
    smoothed = [n for n, m in q.named_modules() if isinstance(m, QuantLinear) and m.smoothed]
    assert len(smoothed) == 13                                         # 2 blocks x 6 + the pooler
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, info, cfg)
    back, meta = load_quantized(path)
    assert meta.extra["quant"]["act_symmetric"] is False and meta.extra["quant"]["smoothed"] == sorted(smoothed)
    with torch.no_grad():
        a, b = q(token_ids), back(token_ids)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    with torch.no_grad():
        ref = tiny_bert(token_ids).last_hidden_state
    assert F.cosine_similarity(ref, a.last_hidden_state, dim=-1).mean() >= 0.999

    # a file written before zero points and smoothing (no such fields, no smoothing buffers) loads as it ran
    old = quantize_ptq(tiny_bert, None, QuantConfig(method="swap", act_symmetric=True))
    save_quantized(old, path, info, QuantConfig(method="swap", act_symmetric=True))
    tensors, meta = read_safetensors(path)
    for key in ("act_symmetric", "smoothed"):
        meta.extra["quant"].pop(key)
    save_file(tensors, path, metadata={META_KEY: meta.to_json()})
    back, _ = load_quantized(path)
    assert all(m.act_symmetric and not m.smoothed for m in back.modules() if isinstance(m, QuantLinear))
    with torch.no_grad():
        assert torch.equal(back(token_ids).last_hidden_state, old(token_ids).last_hidden_state)

    for bad, match in (({"act_symmetric": "no"}, "act_symmetric"), ({"smoothed": "pooler.dense"}, "smoothed"),
                       ({"smoothed": ["embeddings.LayerNorm"]}, "not among the quantized layers")):
        meta.extra["quant"].update(bad)
        save_file(tensors, path, metadata={META_KEY: meta.to_json()})
        with pytest.raises((FormatError, ModelError), match=match):
            load_quantized(path)
        for key in bad:
            meta.extra["quant"].pop(key)


def test_smooth_alpha_is_checked():
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ConfigError, match="smooth_alpha"):
            QuantConfig(smooth_alpha=bad).check()
    with pytest.raises(ConfigError, match="act_symmetric"):
        QuantConfig(act_symmetric="yes").check()
