"""Pruning with reconstruction (Wanda mask + per-row least squares), against brute force."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.masks import get_masks
from deepshrink.prune.fine import magnitude_mask, prune_
from deepshrink.prune.reconstruct import input_hessians, reconstruct_prune_, reconstruct_weight, wanda_mask


def _data(n=24, k=40, t=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k ** 0.5
    x = (torch.randn(t, k, generator=g) @ mix + 0.1 * torch.randn(t, k, generator=g)).double()   # correlated inputs
    return torch.randn(n, k, generator=g).double(), x


def test_wanda_mask_drops_the_smallest_weight_times_input_norm_per_row():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [4.0, 0.1, -0.2, 1.0]])
    norms2 = torch.tensor([1.0, 1.0, 0.01, 100.0])                  # input 2 is small, input 3 large
    keep = wanda_mask(w, norms2, 0.5)
    # scores |w| * norm: row 0 [1, 2, 0.3, 5] -> drop inputs 2, 0; row 1 [4, .1, .02, 10] -> drop 2, 1
    assert keep.tolist() == [[False, True, False, True], [True, False, False, True]]


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_kept_weights_are_the_least_squares_fit_of_each_row(sparsity):
    w, x = _data()
    h = x.t() @ x
    new, keep = reconstruct_weight(w, h, sparsity, damp=0.0)
    assert (keep.sum(1) == w.shape[1] - round(w.shape[1] * sparsity)).all()
    assert (new[~keep] == 0).all()
    for r in range(w.shape[0]):                                     # oracle: lstsq on the kept inputs
        idx = keep[r].nonzero().flatten()
        want = torch.linalg.lstsq(x[:, idx], (x @ w[r])[:, None]).solution.flatten()
        torch.testing.assert_close(new[r, idx], want, rtol=1e-6, atol=1e-8)


def test_reconstruction_beats_magnitude_and_leaves_an_unpruned_weight_as_it_was():
    w, x = _data()
    h = x.t() @ x
    err = lambda v: float(((x @ v.t() - x @ w.t()) ** 2).sum())
    new, _ = reconstruct_weight(w, h, 0.5)
    assert err(new) < 0.7 * err(w * magnitude_mask(w, 0.5))
    same, keep = reconstruct_weight(w, h, 0.0)
    assert keep.all() and torch.allclose(same, w, rtol=0, atol=1e-10)


def test_input_hessians_sum_every_token_of_every_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x = torch.randn(10, 4, 5)                                        # (N, tokens, K): leading dims are tokens
    h, same = input_hessians(model, {"0": model[0], "2": model[2]}, x, batch_size=3)
    assert same is h                                                 # no reference: X R^T is X X^T
    rows = x.reshape(-1, 5).double()
    torch.testing.assert_close(h["0"], rows.t() @ rows, rtol=1e-5, atol=1e-5)   # float32 per batch
    hidden = torch.relu(model[0](x)).reshape(-1, 7).double()
    torch.testing.assert_close(h["2"], hidden.t() @ hidden, rtol=1e-5, atol=1e-5)


class _Grouped(nn.Module):
    """Calls its layers once per group of rows, as the Hugging Face wrapper does."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 2)

    def forward(self, x):
        return torch.cat([self.b(torch.relu(self.a(part))) for part in x.split(2)])


def test_every_call_of_a_layer_counts_and_pairs_with_the_references_same_call():
    torch.manual_seed(0)
    model, ref = _Grouped(), _Grouped()
    x = torch.randn(7, 5)
    grams, cross = input_hessians(model, {"b": model.b}, x, batch_size=4, reference=ref)
    mine, theirs = torch.relu(model.a(x)).double(), torch.relu(ref.a(x)).double()
    torch.testing.assert_close(grams["b"], mine.t() @ mine, rtol=1e-5, atol=1e-5)   # all 7 rows, 4 calls
    torch.testing.assert_close(cross["b"], mine.t() @ theirs, rtol=1e-5, atol=1e-5)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def test_reconstruct_prune_attaches_masks_and_beats_magnitude_on_the_model_outputs():
    torch.manual_seed(1)
    x = torch.randn(256, 16) @ torch.randn(16, 16)
    dense, by_mag, by_rec = _mlp(), _mlp(), _mlp()
    prune_(by_mag, 0.6)
    masks = reconstruct_prune_(by_rec, 0.6, x[:128], group=1)
    assert set(masks) == {"0.weight", "2.weight"} == set(get_masks(by_rec))   # the output layer is not a target
    for name, m in masks.items():
        assert (by_rec.get_parameter(name)[~m] == 0).all()
        assert (~m).float().mean().item() == round(m.shape[1] * 0.6) / m.shape[1]   # per row, rounded
    held_out = x[128:]
    with torch.no_grad():
        err = lambda m: float(((m(held_out) - dense(held_out)) ** 2).mean())
        assert err(by_rec) < 0.8 * err(by_mag)


def test_per_layer_sparsities_and_refusals():
    model = _mlp()
    masks = reconstruct_prune_(model, {"0.weight": 0.5, "4.weight": 0.25}, torch.randn(64, 16))
    assert set(masks) == {"0.weight", "4.weight"}
    assert (~masks["4.weight"]).float().mean().item() == pytest.approx(0.25)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="0.weight.*Linear weights only"):
        reconstruct_prune_(conv, 0.5, torch.randn(8, 1, 8, 8))
    with pytest.raises(ConfigError, match="calibration"):
        reconstruct_prune_(_mlp(), 0.5, torch.randn(0, 16))
    with pytest.raises(ConfigError, match="sparsity"):
        reconstruct_prune_(_mlp(), 1.5, torch.randn(4, 16))


def test_cross_term_fits_the_reference_output_on_the_models_own_inputs():
    w, r = _data(seed=1)                                            # r: the reference's inputs
    x = r + 0.3 * torch.randn(r.shape, generator=torch.Generator().manual_seed(2), dtype=r.dtype)
    new, keep = reconstruct_weight(w, x.t() @ x, 0.5, cross=x.t() @ r, damp=0.0)
    for row in range(w.shape[0]):                                   # oracle: lstsq of R w on the kept X
        idx = keep[row].nonzero().flatten()
        want = torch.linalg.lstsq(x[:, idx], (r @ w[row])[:, None]).solution.flatten()
        torch.testing.assert_close(new[row, idx], want, rtol=1e-6, atol=1e-8)


def test_input_hessians_cross_term_pairs_each_token_with_the_reference():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x = torch.randn(9, 5)
    grams, cross = input_hessians(model, {"2": model[2]}, x, batch_size=4, reference=ref)
    mine, theirs = torch.relu(model[0](x)).double(), torch.relu(ref[0](x)).double()
    torch.testing.assert_close(grams["2"], mine.t() @ mine, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cross["2"], mine.t() @ theirs, rtol=1e-5, atol=1e-5)


def test_correcting_towards_the_dense_model_beats_fitting_each_layer_alone():
    torch.manual_seed(3)
    deep = lambda: nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(24, 24), nn.ReLU())], nn.Linear(24, 4))
    torch.manual_seed(3)
    dense = deep()
    x = torch.randn(512, 24) @ torch.randn(24, 24)
    models = {}
    for correct in (True, False):
        m = deep()
        m.load_state_dict(dense.state_dict())
        reconstruct_prune_(m, 0.7, x[:256], group=1, correct=correct)
        models[correct] = m
    with torch.no_grad():
        err = {c: float(((m(x[256:]) - dense(x[256:])) ** 2).mean()) for c, m in models.items()}
    assert err[True] < err[False]


def test_the_model_keeps_its_mode_and_big_solves_are_split(monkeypatch):
    import deepshrink.prune.reconstruct as rec
    model = _mlp().train()
    reconstruct_prune_(model, 0.5, torch.randn(32, 16))
    assert model.training and all(m.training for m in model.modules())
    w, x = _data()
    whole, _ = reconstruct_weight(w, x.t() @ x, 0.5)
    monkeypatch.setattr(rec, "SOLVE_BYTES", 20 * 20 * 8 * 3)     # three rows of 20 kept weights per solve
    split, _ = reconstruct_weight(w, x.t() @ x, 0.5)
    torch.testing.assert_close(split, whole)
