"""deepshrink.prune.fine: magnitude / std / random masks, layer and global scope, prune_."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune import get_masks, prunable_weights, prune_
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
    masks = prune_(model, 0.6)
    for name in ("0", "2", "4"):
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
