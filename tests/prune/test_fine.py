"""deepshrink.prune.fine: magnitude / std / random masks, layer and global scope, prune_."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune import get_masks, layer_sparsities, prunable_weights, prune_, sparsity
from deepshrink.prune.fine import (compute_masks, global_magnitude_masks, magnitude_mask, random_mask, std_mask,
                                   std_masks_for_target)


def zeros_of(mask: torch.Tensor) -> int:
    return int((~mask).sum())


def lab_fine_grained_mask(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The pruning lab's rule (seed 003): kthvalue threshold, keep ``importance > threshold``."""
    num_zeros = round(tensor.numel() * sparsity)
    importance = tensor.abs()
    threshold = torch.kthvalue(importance.flatten(), num_zeros)[0]
    return importance > threshold


def assert_largest_kept(w: torch.Tensor, mask: torch.Tensor) -> None:
    """Oracle by brute-force sort: the pruned values are exactly the k smallest |w|."""
    a = w.abs().flatten().tolist()
    m = mask.flatten().tolist()
    k = m.count(False)
    pruned = sorted(v for v, keep in zip(a, m) if not keep)
    kept = [v for v, keep in zip(a, m) if keep]
    assert pruned == sorted(a)[:k]
    if pruned and kept:
        assert max(pruned) <= min(kept)


def three_layer(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 7), nn.ReLU(), nn.Linear(7, 3))
    with torch.no_grad():  # different scales per layer: a global threshold must differ from per-layer ones
        net[0].weight.mul_(3.0)
        net[4].weight.mul_(0.2)
    return net


# ----------------------------------------------------------------------------- magnitude

SIZES = [1, 2, 3, 5, 7, 10, 17, 64, 101, 257]
SPARSITIES = [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.75, 0.9, 0.99, 1.0]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("s", SPARSITIES)
def test_magnitude_exact_zero_count(n, s):
    w = torch.randn(n, generator=torch.Generator().manual_seed(n))
    mask = magnitude_mask(w, s)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert zeros_of(mask) == round(n * s)
    assert_largest_kept(w, mask)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       s=st.floats(0.0, 1.0, allow_nan=False),
       levels=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_magnitude_exact_with_ties(shape, s, levels, seed):
    """Values drawn from a few levels (many duplicates, sign flips): the count is still exact."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-levels, levels + 1, shape, generator=g).float() * 0.25
    mask = magnitude_mask(w, s)
    assert mask.shape == w.shape
    assert zeros_of(mask) == round(w.numel() * s)
    assert_largest_kept(w, mask)


@pytest.mark.parametrize("s", [0.25, 0.5, 0.9])
def test_all_equal_values_not_over_pruned(s):
    w = torch.full((10, 10), 0.3)
    # the lab's kthvalue rule removes every weight tied with the threshold: all of them
    assert zeros_of(lab_fine_grained_mask(w, s)) == 100
    assert zeros_of(magnitude_mask(w, s)) == round(100 * s)


def test_many_duplicates_not_over_pruned():
    g = torch.Generator().manual_seed(3)
    w = torch.randint(0, 3, (40, 25), generator=g).float() - 1.0  # {-1, 0, 1}, ties everywhere
    s = 0.5
    assert zeros_of(lab_fine_grained_mask(w, s)) > round(w.numel() * s)  # the lab over-prunes here
    mask = magnitude_mask(w, s)
    assert zeros_of(mask) == round(w.numel() * s)
    assert_largest_kept(w, mask)


def test_magnitude_conv_shape_and_no_side_effect():
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    before = w.clone()
    mask = magnitude_mask(w, 0.6)
    assert mask.shape == w.shape
    assert torch.equal(w, before)  # a pure function: the tensor is untouched
    assert zeros_of(mask) == round(w.numel() * 0.6)


def test_magnitude_extremes():
    w = torch.randn(6, 5)
    assert magnitude_mask(w, 0.0).all()
    assert not magnitude_mask(w, 1.0).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0001, 2, float("nan"), float("inf")])
def test_invalid_sparsity_raises(bad):
    w = torch.randn(5, 5)
    with pytest.raises(ConfigError):
        magnitude_mask(w, bad)
    with pytest.raises(ConfigError):
        random_mask(w, bad)
    with pytest.raises(ConfigError):
        global_magnitude_masks({"a": w}, bad)
    with pytest.raises(ConfigError):
        compute_masks(three_layer(), bad)


# ----------------------------------------------------------------------------- std rule

@pytest.mark.parametrize("q", [0.0, 0.3, 0.75, 1.0, 1.7])
def test_std_mask_matches_brute_force(q):
    w = torch.randn(13, 11, generator=torch.Generator().manual_seed(int(q * 10)))
    vals = w.flatten().tolist()
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))  # unbiased, like torch.std
    expected = torch.tensor([abs(v) >= q * std for v in vals]).view_as(w)
    assert torch.equal(std_mask(w, q), expected)


def test_std_mask_negative_q_raises():
    with pytest.raises(ConfigError):
        std_mask(torch.randn(3, 3), -0.5)


@pytest.mark.parametrize("s", [0.2, 0.5, 0.8, 0.95])
def test_std_global_target_hits_total_sparsity(s):
    model = three_layer()
    weights = prunable_weights(model)
    n_total = sum(w.numel() for w in weights.values())
    masks = compute_masks(model, s, rule="std", scope="global")
    achieved = sum(zeros_of(m) for m in masks.values()) / n_total
    assert abs(achieved - s) <= 1.0 / n_total + 1e-12
    # Han's rule: one quality parameter q for every layer
    masks2, q = std_masks_for_target(weights, s)
    for name, w in weights.items():
        assert torch.equal(masks2[name], std_mask(w, q))
        assert torch.equal(masks[name], masks2[name])


@pytest.mark.parametrize("s", [0.3, 0.7])
def test_std_layer_target_hits_each_layer(s):
    model = three_layer()
    masks = compute_masks(model, s, rule="std", scope="layer")
    for name, w in prunable_weights(model).items():
        assert abs(zeros_of(masks[name]) / w.numel() - s) <= 1.0 / w.numel() + 1e-12


# ----------------------------------------------------------------------------- random

@pytest.mark.parametrize("n,s", [(1, 0.5), (10, 0.3), (100, 0.75), (257, 0.9), (50, 0.0), (50, 1.0)])
def test_random_mask_exact_count(n, s):
    w = torch.randn(n)
    mask = random_mask(w, s, torch.Generator().manual_seed(1))
    assert zeros_of(mask) == round(n * s)


def test_random_mask_seeded_reproducible():
    w = torch.randn(20, 30)
    a = random_mask(w, 0.5, torch.Generator().manual_seed(7))
    b = random_mask(w, 0.5, torch.Generator().manual_seed(7))
    c = random_mask(w, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    m1 = compute_masks(three_layer(), 0.6, rule="random", seed=3)
    m2 = compute_masks(three_layer(), 0.6, rule="random", seed=3)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


def test_random_global_exact_total():
    model = three_layer()
    n_total = sum(w.numel() for w in prunable_weights(model).values())
    masks = compute_masks(model, 0.65, rule="random", scope="global", seed=0)
    assert sum(zeros_of(m) for m in masks.values()) == round(n_total * 0.65)


# ----------------------------------------------------------------------------- global scope

@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.77, 0.9, 1.0])
def test_global_magnitude_exact_and_single_threshold(s):
    model = three_layer()
    weights = prunable_weights(model)
    n_total = sum(w.numel() for w in weights.values())
    for masks in (compute_masks(model, s, scope="global"), global_magnitude_masks(weights, s)):
        assert set(masks) == set(weights)
        assert sum(zeros_of(m) for m in masks.values()) == round(n_total * s)
        pruned = torch.cat([weights[n].detach().abs()[~masks[n]] for n in weights])
        kept = torch.cat([weights[n].detach().abs()[masks[n]] for n in weights])
        if pruned.numel() and kept.numel():
            assert pruned.max() <= kept.min()  # one threshold across layers


def test_global_differs_from_layer_scope():
    model = three_layer()
    glob = compute_masks(model, 0.5, scope="global")
    fracs = [zeros_of(m) / m.numel() for m in glob.values()]
    assert max(fracs) - min(fracs) > 0.2  # layers of different scale get different sparsities


def test_global_with_ties_exact():
    weights = {"a": torch.ones(4, 5), "b": torch.ones(3, 3), "c": torch.zeros(2, 2)}
    masks = global_magnitude_masks(weights, 0.5)
    assert sum(zeros_of(m) for m in masks.values()) == round(33 * 0.5)
    assert not masks["c"].any()  # the zeros go first


# ----------------------------------------------------------------------------- prune_

def test_prune_attaches_buffers_and_zeroes():
    model = three_layer()
    last = model[4].weight.detach().clone()
    masks = prune_(model, 0.6)
    assert not hasattr(model[4], "weight_mask") and torch.equal(model[4].weight, last)  # the output layer
    for name in ("0", "2"):
        layer = model.get_submodule(name)
        mask = layer.weight_mask
        assert mask.dtype == torch.bool and mask.shape == layer.weight.shape
        assert torch.equal(mask, masks[f"{name}.weight"])
        assert (layer.weight[~mask] == 0).all()
        assert (layer.weight[mask] != 0).all()
        assert f"{name}.weight_mask" in model.state_dict()
        assert zeros_of(mask) == round(layer.weight.numel() * 0.6)
    assert set(get_masks(model)) == set(prunable_weights(model))


def test_prune_per_layer_dict_touches_named_layers_only():
    model = three_layer()
    before = model[2].weight.detach().clone()
    prune_(model, {"0.weight": 0.5, "4.weight": 0.9})
    assert set(get_masks(model)) == {"0.weight", "4.weight"}
    assert torch.equal(model[2].weight, before)
    assert zeros_of(model[0].weight_mask) == 120
    assert zeros_of(model[4].weight_mask) == round(21 * 0.9)


def test_prune_unknown_layer_names_it():
    model = three_layer()
    with pytest.raises(ConfigError, match="fc9.weight"):
        prune_(model, {"0.weight": 0.5, "fc9.weight": 0.5})
    assert get_masks(model) == {}  # nothing attached on error


@pytest.mark.parametrize("kw", [dict(rule="nope"), dict(scope="everywhere")])
def test_compute_masks_bad_options(kw):
    with pytest.raises(ConfigError):
        compute_masks(three_layer(), 0.5, **kw)


def test_per_layer_dict_with_global_scope_raises():
    with pytest.raises(ConfigError):
        compute_masks(three_layer(), {"0.weight": 0.5}, scope="global")


def test_model_without_prunable_weights_raises():
    with pytest.raises(ConfigError):
        compute_masks(nn.Sequential(nn.ReLU()), 0.5)


# ----------------------------------------------------------------------------- any nn.Module: targets, include/exclude

class UserCNN(nn.Module):
    """A CNN defined here, as a user's own would be: conv -> BN -> conv -> pool -> hidden -> head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 10, 3)
        self.hidden = nn.Linear(10, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):  # (N, 1, H, W) -> (N, 4)
        x = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).mean((2, 3))
        return self.head(torch.relu(self.hidden(x)))


class TokenNet(nn.Module):
    """Embedding + a torch TransformerEncoderLayer + Linear head, on token ids."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, ids):  # (N, L) -> (N, 3)
        return self.head(self.encoder(self.embed(ids)).mean(1))


def seeded(cls):
    torch.manual_seed(0)
    return cls()


def untouched(before: dict, model: nn.Module, names) -> bool:
    after = model.state_dict()
    return all(torch.equal(before[n], after[n]) for n in names)


def test_user_cnn_default_prunes_convs_and_hidden_only():
    model = seeded(UserCNN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune_(model, 0.5)
    assert list(masks) == ["conv1.weight", "conv2.weight", "hidden.weight"]
    for name in masks:
        w = model.get_parameter(name)
        assert zeros_of(masks[name]) == round(w.numel() * 0.5) and int((w == 0).sum()) == round(w.numel() * 0.5)
    assert untouched(before, model, ["head.weight", "head.bias", "bn.weight", "bn.bias", "conv1.bias"])
    # the reported sparsity is over the pruned weights only, exactly
    n = [model.get_parameter(k).numel() for k in masks]
    assert sparsity(model) == sum(round(v * 0.5) for v in n) / sum(n)
    assert set(layer_sparsities(model)) == set(masks)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_token_net_include_embedding_and_classifier(scope):
    model = seeded(TokenNet)
    ids = torch.randint(0, 30, (4, 7), generator=torch.Generator().manual_seed(1))
    masks = prune_(model, 0.6, scope=scope, include=["embed", "head"])
    assert list(masks) == ["embed.weight", "encoder.self_attn.in_proj_weight", "encoder.self_attn.out_proj.weight",
                           "encoder.linear1.weight", "encoder.linear2.weight", "head.weight"]
    total = sum(m.numel() for m in masks.values())
    if scope == "global":
        assert sum(zeros_of(m) for m in masks.values()) == round(total * 0.6)
    else:
        assert all(zeros_of(m) == round(m.numel() * 0.6) for m in masks.values())
    assert (model.encoder.self_attn.in_proj_weight[~masks["encoder.self_attn.in_proj_weight"]] == 0).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(ids)).all()  # the attention fast path reads the pruned projections
    assert not hasattr(model.encoder.norm1, "weight_mask")


def test_token_net_exclude_and_per_layer_map():
    model = seeded(TokenNet)
    masks = prune_(model, 0.5, exclude="encoder.self_attn*")
    assert list(masks) == ["encoder.linear1.weight", "encoder.linear2.weight"]
    # a per-layer map prunes exactly its names, the output layer too when named ...
    model = seeded(TokenNet)
    assert list(prune_(model, {"head.weight": 0.5, "encoder.linear1.weight": 0.25})) == [
        "head.weight", "encoder.linear1.weight"]
    # ... but not a name an exclude glob matches
    with pytest.raises(ConfigError, match="'head.weight'.*excluded"):
        prune_(seeded(TokenNet), {"head.weight": 0.5}, exclude="head")


def test_nothing_left_to_prune_is_a_config_error():
    with pytest.raises(ConfigError, match="no weights to prune"):
        prune_(nn.Sequential(nn.Linear(3, 2)), 0.5)          # the only layer is the output layer
    with pytest.raises(ConfigError, match="no weights to prune"):
        prune_(seeded(UserCNN), 0.5, exclude="*")
    assert list(prune_(nn.Sequential(nn.Linear(3, 2)), 0.5, include="0")) == ["0.weight"]


def test_unmatched_glob_names_it_and_attaches_nothing():
    model = seeded(UserCNN)
    with pytest.raises(ConfigError, match="include glob 'clasifier'"):
        prune_(model, 0.5, include=["head", "clasifier"])
    assert get_masks(model) == {}


def test_tiny_bert_default_prunes_the_encoder_linears():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64)).eval()
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    masks = prune_(bert, 0.5)
    assert len(masks) == 12 and all(k.startswith("encoder.layer.") and k.endswith(".weight") for k in masks)
    for name, mask in masks.items():
        assert zeros_of(mask) == mask.numel() // 2, name
    assert sparsity(bert) == 0.5
    keep = [k for k in before if "embeddings" in k or "LayerNorm" in k or k.startswith("pooler.")]
    assert len(keep) >= 9 and untouched(before, bert, keep)
