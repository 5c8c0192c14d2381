"""deepshrink.prune.variational: sparse variational dropout (Molchanov et al. 2017)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.data import Dataset, Split
from deepshrink.errors import ConfigError
from deepshrink.masks import get_masks
from deepshrink.prune.variational import (K1, K2, K3, SparseVD, VDConfig, kl_weight, log_alpha, neg_kl,
                                          sparse_vd_prune_)


def test_neg_kl_is_the_papers_fit():
    for la in (-8.0, -2.5, 0.0, 1.3, 3.0, 7.5):
        want = K1 / (1 + math.exp(-(K2 + K3 * la))) - 0.5 * math.log1p(math.exp(-la)) - K1
        assert neg_kl(torch.tensor(la)).item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    las = torch.linspace(-10, 10, 201)
    v = neg_kl(las)
    assert (v <= 1e-6).all() and (v.diff() > 0).all()       # a KL is >= 0 and shrinks as the noise grows
    assert v[-1].abs() < 1e-3                                 # alpha -> inf: the KL vanishes


def test_log_alpha_formula_and_clamp():
    theta = torch.tensor([0.5, -0.01, 0.0, 2.0])
    ls2 = torch.tensor([-4.0, -10.0, 0.0, -30.0])
    la = log_alpha(theta, ls2)
    assert la[0].item() == pytest.approx(-4.0 - math.log(0.25 + 1e-8), rel=1e-5)
    assert la[1].item() == pytest.approx(-10.0 - math.log(1e-4 + 1e-8), rel=1e-5)
    assert la[2].item() == 10.0 and la[3].item() == -10.0


def test_kl_weight_warmup():
    assert [kl_weight(s, 100, 0.5) for s in (0, 25, 50, 90)] == [0.0, 0.5, 1.0, 1.0]
    assert kl_weight(0, 100, 0.0) == 1.0


def _unfolded_variance(conv: nn.Conv2d, x: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """sum_i x_i^2 sigma_i^2 over each output's receptive field, by an explicit unfold."""
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)      # (N, C*k*k, L)
    var = torch.einsum("nkl,ok->nol", cols * cols, sigma2.reshape(sigma2.shape[0], -1))  # (N, O, L)
    h = (x.shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    return var.reshape(x.shape[0], -1, h, var.shape[-1] // h)


def test_noise_matches_the_local_reparameterisation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.Flatten(), nn.Linear(48, 5))
    vd = SparseVD(model, ["0.weight", "2.weight"])
    conv, fc = model[0], model[2]
    with torch.no_grad():
        conv.weight_log_sigma2.uniform_(-3, -1)
        fc.weight_log_sigma2.uniform_(-3, -1)
    x = torch.randn(1, 2, 8, 8)
    # the conv's hook alone: the sample mean is the mean-weight output, the variance sum x^2 sigma^2
    model.train()
    with torch.no_grad():
        mean = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    outs = torch.stack([conv(x).detach() for _ in range(4000)])
    var = _unfolded_variance(conv, x, conv.weight_log_sigma2.detach().exp())
    assert torch.allclose(outs.mean(0), mean, atol=4 * var.sqrt().max().item() / math.sqrt(4000))
    assert torch.allclose(outs.var(0), var, rtol=0.12)
    h = torch.randn(7, 48)
    fouts = torch.stack([fc(h).detach() for _ in range(4000)])
    fvar = (h * h) @ fc.weight_log_sigma2.detach().exp().T
    assert torch.allclose(fouts.var(0), fvar, rtol=0.12)
    model.eval()                                   # inference: the mean weights, no noise
    assert torch.equal(conv(x), mean)
    with torch.no_grad():
        model.train()
        assert torch.equal(conv(x), mean)          # no gradient: no noise either
    vd.detach()


def test_detach_leaves_a_plain_model_and_returns_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    keys = set(model.state_dict())
    vd = SparseVD(model, ["0.weight"])
    assert "0.weight_log_sigma2" in model.state_dict()
    with torch.no_grad():
        model[0].weight[0, :3] = 1e-6                 # tiny weights: log alpha far above 3
    masks = vd.detach()
    assert set(model.state_dict()) == keys and not model[0]._forward_hooks
    assert masks["0.weight"].dtype == torch.bool and not masks["0.weight"][0, :3].any()
    assert masks["0.weight"][1:].all()


def test_bad_targets_are_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ConfigError, match="not the weight of a Linear or Conv2d"):
        SparseVD(model, ["1.weight"])
    with pytest.raises(ConfigError, match="finite"):
        SparseVD(model, ["0.weight"], threshold=math.inf)
    with pytest.raises(ConfigError, match="circular"):
        SparseVD(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")), ["0.weight"])
    with pytest.raises(ConfigError, match="at least one epoch"):
        sparse_vd_prune_(model, None, VDConfig(epochs=0))


def test_sparse_vd_prunes_the_inputs_that_carry_nothing():
    # only the first 4 of 32 inputs decide the class; the rest is noise, and VD should cut them
    g = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.randn(n, 32, generator=g)
        y = (x[:, :4] @ torch.tensor([1.0, -1.0, 0.5, 2.0]) > 0).long()
        return Split(x, y)

    data = Dataset("toy", split(2048), split(512), [0.0], [1.0], 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    acc = sparse_vd_prune_(model, data, VDConfig(epochs=60, lr=1e-2, progress=False, verbose=False))
    masks = get_masks(model)
    assert set(masks) == {"0.weight", "2.weight"}             # the output layer is no default target
    kept = masks["0.weight"].float()
    assert kept[:, 4:].mean() < 0.15 < kept[:, :4].mean()    # the noise columns go, the signal ones stay
    assert acc > 0.9
    assert torch.equal(model[0].weight == 0, ~masks["0.weight"] | (model[0].weight == 0))
