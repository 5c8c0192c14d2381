"""deepshrink.quant.bit_allocation: per-layer widths from measured sensitivity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.quant.bit_allocation import choose_bits, shared_layers
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
