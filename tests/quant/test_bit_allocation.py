"""deepshrink.quant.bit_allocation: per-layer widths from measured sensitivity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.quant.bit_allocation import choose_bits, paired_drop, shared_layers
from deepshrink.quant.kmeans import KMeansConfig, kmeans_quantize_


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _score_fn():
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = _model()(x).detach()

    def score(m):       # higher is better: minus the mean squared error to the float model's outputs
        with torch.no_grad():
            return -float((m(x) - ref).pow(2).mean())
    return score


def test_shared_layers_in_model_order():
    m = _model()
    assert shared_layers(m, KMeansConfig()) == ["0", "3", "5"]
    assert shared_layers(m, KMeansConfig(conv_bits=0)) == ["3", "5"]
    assert all(not n.endswith("_codebook") for n in m.state_dict())      # the model is untouched


@pytest.mark.parametrize("tol", [1e-5, 1e-3, 1.0])
def test_choice_is_the_fewest_bits_within_tolerance(tol):
    m, score = _model(), _score_fn()
    before = copy.deepcopy(m.state_dict())
    choice = choose_bits(m, score, KMeansConfig(), tol)
    for layer, b in choice.bits.items():          # oracle: every width measured, the smallest that fits
        measured = {}
        for bits in range(2, 9):
            trial = copy.deepcopy(m)
            kmeans_quantize_(trial, KMeansConfig(conv_bits=0, fc_bits=0, bits={layer: bits}))
            measured[bits] = score(trial)
        fits = [bits for bits, s in measured.items() if choice.reference - s <= tol]
        assert b == (min(fits) if fits else 8)
        assert all(choice.scores[layer][k] == pytest.approx(measured[k]) for k in choice.scores[layer])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    if tol == 1.0:
        assert set(choice.bits.values()) == {2}


def test_fixed_layers_are_kept_and_not_measured():
    m, score = _model(), _score_fn()
    choice = choose_bits(m, score, KMeansConfig(), 1e-4, fixed={"3": 6})
    assert choice.bits["3"] == 6 and "3" not in choice.scores
    assert choice.to_dict()["bits"] == choice.bits


def test_bad_candidates_and_tolerance():
    m, score = _model(), _score_fn()
    with pytest.raises(ConfigError, match="1..8"):
        choose_bits(m, score, KMeansConfig(), 0.1, candidates=(0, 4))
    with pytest.raises(ConfigError, match="tolerance"):
        choose_bits(m, score, KMeansConfig(), -1.0)


def test_a_known_choice_is_reused_not_measured_again():
    m, score = _model(), _score_fn()
    calls = []

    def counted(model):
        calls.append(1)
        return score(model)

    first = choose_bits(m, counted, KMeansConfig(), 1e-3)
    n_first = len(calls)
    calls.clear()
    again = choose_bits(m, counted, KMeansConfig(), 1e-5, known=first)
    fresh = choose_bits(m, score, KMeansConfig(), 1e-5)
    assert again.bits == fresh.bits and again.scores == fresh.scores and again.reference == fresh.reference
    new = sum(len(v) for v in fresh.scores.values()) - sum(len(v) for v in first.scores.values())
    assert len(calls) == new < n_first + new                # only the widths the first choice never tried


def _samples_fn():
    """Per-sample scores: 1 where the model's top class matches the float model's, else 0 (mean: agreement)."""
    x = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = _model()(x).detach().argmax(1)

    def samples(m):
        with torch.no_grad():
            return (m(x).argmax(1) == ref).double()
    return samples


def test_paired_drop_against_a_loop():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.rand(50, generator=g) > 0.3).double(), (torch.rand(50, generator=g) > 0.4).double()
    d = [float(x - y) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    se = (sum((v - mean) ** 2 for v in d) / (len(d) - 1)) ** 0.5 / len(d) ** 0.5
    assert paired_drop(a, b) == pytest.approx((mean, se))
    assert paired_drop(a, a) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="equal non-empty"):
        paired_drop(a, b[:10])


@pytest.mark.parametrize("z", [0.0, 1.0, 3.0])
def test_standard_errors_hold_each_width_to_a_bound(z):
    m, samples = _model(), _samples_fn()
    tol = 0.02
    choice = choose_bits(m, None, KMeansConfig(), tol, samples=samples, z=z)
    ref = samples(m)
    assert choice.reference == pytest.approx(ref.mean().item()) and choice.z == z
    for layer, b in choice.bits.items():          # oracle: every width measured, the smallest whose bound fits
        bounds = {}
        for bits in range(2, 9):
            trial = copy.deepcopy(m)
            kmeans_quantize_(trial, KMeansConfig(conv_bits=0, fc_bits=0, bits={layer: bits}))
            drop, se = paired_drop(ref, samples(trial))
            bounds[bits] = max(drop, 0.0) + z * se
        fits = [bits for bits, v in bounds.items() if v <= tol]
        assert b == (min(fits) if fits else 8)
        for k, err in choice.errors[layer].items():
            assert max(choice.reference - choice.scores[layer][k], 0.0) + z * err == pytest.approx(bounds[k])
    loose = choose_bits(m, None, KMeansConfig(), tol, samples=samples, z=0.0)
    assert all(choice.bits[k] >= loose.bits[k] for k in choice.bits)      # a margin never takes bits away


def test_a_gain_is_no_credit():
    """A width that scores above the reference passes on its standard errors alone: the gain does not
    pay for them."""
    m = _model()
    ref = torch.ones(100, dtype=torch.float64)
    lucky = torch.cat([torch.full((40,), 2.0), torch.zeros(20), torch.ones(40)]).double()   # +0.6 mean, se 0.09

    def samples(model):
        return ref if model is m else lucky
    se = paired_drop(ref, lucky)[1]
    assert choose_bits(m, None, KMeansConfig(), se * 0.99, samples=samples, z=1.0).bits == {"0": 8, "3": 8, "5": 8}
    assert set(choose_bits(m, None, KMeansConfig(), se * 1.01, samples=samples, z=1.0).bits.values()) == {2}
