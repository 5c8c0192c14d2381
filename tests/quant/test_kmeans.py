"""K-means weight sharing: the 1-D Lloyd against a brute-force one, the quantizer's invariants,
the centroid gradient (sum of members) against plain autograd, and fine-tuning keeping ties."""

import numpy as np
import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.quant import KMeansConfig, centroid_finetune, kmeans_quantize_, quantized_layers
from deepshrink.quant.kmeans import _Tied, kmeans_codebook
from deepshrink.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_kmeans(v: np.ndarray, bits: int, iters: int):
    """Textbook Lloyd, linear init, distances to every centroid, empty clusters dropped."""
    c = np.linspace(v.min(), v.max(), 2 ** bits)
    for _ in range(iters):
        a = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)   # ties -> lower index
        used = np.unique(a)
        new = np.array([v[a == k].mean() for k in used])
        if new.shape == c.shape and np.array_equal(new, c):
            break
        c = new
    a = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)
    used = np.unique(a)
    remap = {k: i for i, k in enumerate(used)}
    return c[used], np.array([remap[k] for k in a])


@pytest.mark.parametrize("bits,n,seed", [(1, 50, 0), (2, 200, 1), (3, 1000, 2), (5, 3000, 3), (8, 500, 4)])
def test_kmeans_matches_brute_force(bits, n, seed):
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(-0.1, 0.03, n // 2), rng.normal(0.08, 0.05, n - n // 2)])
    cents, assign = kmeans_codebook(torch.from_numpy(v), bits, iters=15)
    ref_c, ref_a = brute_kmeans(v, bits, 15)
    np.testing.assert_allclose(cents.numpy(), ref_c.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert np.array_equal(assign.numpy(), ref_a)
    assert cents.numel() <= 2 ** bits and bool((cents[1:] > cents[:-1]).all())


def test_kmeans_degenerate_inputs():
    c, a = kmeans_codebook(torch.zeros(0), 4)
    assert c.numel() == 0 and a.numel() == 0
    c, a = kmeans_codebook(torch.full((7,), 0.25), 4)
    assert c.tolist() == [0.25] and a.tolist() == [0] * 7


def _pruned_mlp(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        m[1].weight.mul_(torch.rand_like(m[1].weight) > 0.7)   # ~70 % pruned
    return m


def test_quantize_keeps_zeros_and_codebook_membership():
    m = _pruned_mlp()
    zeros_before = m[1].weight == 0
    done = kmeans_quantize_(m, KMeansConfig(fc_bits=3, bits={"3": 2}))
    assert done == {"1": 3, "3": 2}
    assert torch.equal(m[1].weight == 0, zeros_before)
    for name, mod in quantized_layers(m).items():
        cb = mod.weight_codebook
        assert cb.numel() <= 2 ** mod.weight_bits
        nz = mod.weight[mod.weight != 0]
        assert bool(torch.isin(nz, cb).all())
        assert torch.equal(cb.half().float(), cb)   # fp16-exact by default


def test_quantize_skip_and_bad_config():
    m = _pruned_mlp()
    assert kmeans_quantize_(m, KMeansConfig(fc_bits=4, bits={"3": 0})) == {"1": 4}
    with pytest.raises(ConfigError, match="unknown layers"):
        kmeans_quantize_(_pruned_mlp(), KMeansConfig(bits={"fc9": 4}))
    with pytest.raises(ConfigError, match="1..8"):
        kmeans_quantize_(_pruned_mlp(), KMeansConfig(fc_bits=9))
    with pytest.raises(ConfigError, match="no k-means"):
        centroid_finetune(_pruned_mlp(), None)


def test_centroid_gradient_is_sum_of_member_gradients():
    m = _pruned_mlp(1)
    kmeans_quantize_(m, KMeansConfig(fc_bits=3))
    x, y = torch.randn(16, 64), torch.randint(0, 4, (16,))
    # oracle: plain gradient of the weight, summed per centroid by hand
    m.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    plain = m[1].weight.grad.clone()
    w, cb = m[1].weight.detach(), m[1].weight_codebook
    expected = {k: plain[(w == cb[k])].sum() for k in range(cb.numel())}
    tied = _Tied(m[1])
    m.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    g = m[1].weight.grad
    for k, s in expected.items():
        members = w == cb[k]
        assert torch.allclose(g[members], s.expand(int(members.sum())), atol=1e-6)
    assert bool((g[w == 0] == 0).all())
    tied.handle.remove()


def test_finetune_keeps_weights_tied(make_dataset):
    ds = make_dataset()
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        m[1].weight.mul_(torch.rand_like(m[1].weight) > 0.5)
    zeros = m[1].weight == 0
    kmeans_quantize_(m, KMeansConfig(fc_bits=3))
    before = m[1].weight_codebook.clone()
    cfg = TrainConfig(epochs=2, lr=1e-3, optimizer="adam", weight_decay=0.0, augment=False,
                      progress=False, verbose=False, batch_size=32)
    res = centroid_finetune(m, ds, cfg)
    assert 0 <= res.accuracy <= 1
    assert torch.equal(m[1].weight == 0, zeros)
    for mod in quantized_layers(m).values():
        cb = mod.weight_codebook
        assert cb.numel() <= 2 ** mod.weight_bits
        assert bool(torch.isin(mod.weight[mod.weight != 0], cb).all())
        assert bool((cb[1:] > cb[:-1]).all())
    assert not torch.equal(m[1].weight_codebook, before)   # the centroids did move
