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


# ----------------------------------------------------------------------------- any parameter

class TaggedCNN(nn.Module):
    """A CNN whose logits get a per-tag offset from an embedding table; input ((N, 1, 8, 8), (N,))."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 5)
        self.tags, self.norm = nn.Embedding(7, 5), nn.LayerNorm(5)

    def forward(self, x, tag):
        return self.norm(self.fc(torch.relu(self.conv(x)).flatten(1)) + self.tags(tag))


def _dsz_round_trip(model, arch, monkeypatch, factory):
    """dumps -> loads through a zoo name; returns (blob, rebuilt model)."""
    import deepshrink.models as zoo
    from deepshrink.codec import dumps, loads
    from deepshrink.modelfile import ModelInfo
    monkeypatch.setitem(zoo.REGISTRY, arch, factory)
    blob = dumps(model, ModelInfo(arch=arch))
    return blob, loads(blob)


def test_embeddings_and_included_parameters_share_and_decode_bit_for_bit(monkeypatch):
    from deepshrink.codec.container import parse_file
    torch.manual_seed(0)
    m = TaggedCNN().eval()
    cfg = KMeansConfig(embedding_bits=3, include=["*.bias"], exclude=["norm.*"], bits={"fc.bias": 2})
    assert kmeans_quantize_(m, cfg) == {"conv": 8, "conv.bias": 8, "fc": 5, "fc.bias": 2, "tags": 3}
    assert not hasattr(m.norm, "bias_codebook") and m.tags.weight_bits == 3 and m.fc.bias_bits == 2
    assert m.tags.weight_codebook.numel() <= 8 and bool(torch.isin(m.tags.weight, m.tags.weight_codebook).all())
    assert set(quantized_layers(m)) == {"conv", "fc", "tags"}
    blob, back = _dsz_round_trip(m, "tagged_cnn_test", monkeypatch, TaggedCNN)
    kinds = {e["name"]: e["kind"] for e in parse_file(blob, "<test>").entries}
    assert kinds["tags.weight"] == kinds["fc.bias"] == kinds["conv.weight"] == "quantized"
    assert kinds["norm.bias"] == "raw"
    own, rebuilt = m.state_dict(), back.state_dict()
    assert own.keys() == rebuilt.keys() and all(torch.equal(own[k], rebuilt[k]) for k in own)
    assert back.tags.weight_bits == 3 and back.fc.bias_bits == 2
    x, tag = torch.randn(4, 1, 8, 8), torch.tensor([0, 6, 3, 3])
    with torch.no_grad():
        assert torch.equal(back(x, tag), m(x, tag))
    with pytest.raises(ConfigError, match="list of parameter-name globs"):
        kmeans_quantize_(TaggedCNN(), KMeansConfig(include="*.bias"))
    with pytest.raises(ConfigError, match="unknown layers or parameters"):
        kmeans_quantize_(TaggedCNN(), KMeansConfig(bits={"fc.gain": 4}))
    with pytest.raises(ConfigError, match=r"match no layer or parameter: \['nrom'\]"):
        kmeans_quantize_(TaggedCNN(), KMeansConfig(exclude=["nrom"]))       # a typo is an error
    m = TaggedCNN()                                                        # a layer name excludes all of it
    assert kmeans_quantize_(m, KMeansConfig(include=["*.bias"], exclude=["conv"])) == {"fc": 5, "fc.bias": 8,
                                                                                      "norm.bias": 8}


def test_default_config_leaves_embeddings_alone():
    m = TaggedCNN()
    before = m.tags.weight.detach().clone()
    assert kmeans_quantize_(m) == {"conv": 8, "fc": 5}
    assert torch.equal(m.tags.weight, before) and not hasattr(m.tags, "weight_codebook")


def test_bert_embeddings_share_and_the_dsz_file_rebuilds_it(tiny_bert, token_ids, monkeypatch):
    done = kmeans_quantize_(tiny_bert, KMeansConfig(fc_bits=5, embedding_bits=4, iters=10))
    assert done["embeddings.word_embeddings"] == 4 and done["encoder.layer.1.output.dense"] == 5 and len(done) == 16
    from deepshrink.codec.container import parse_file
    from deepshrink.codec.model_io import decode_file
    blob, back = _dsz_round_trip(tiny_bert, "tiny_bert_kmeans_test", monkeypatch,
                                 lambda: type(tiny_bert)(tiny_bert.config))
    decoded = decode_file(parse_file(blob, "<test>")).state
    own = tiny_bert.state_dict()
    assert decoded.keys() == own.keys() and all(torch.equal(decoded[k], own[k]) for k in own)
    with torch.no_grad():
        assert torch.equal(back(token_ids).last_hidden_state, tiny_bert(token_ids).last_hidden_state)
    assert len(blob) < 0.5 * sum(t.numel() * 4 for t in own.values())


class TiedHead(nn.Module):
    """Images -> 16 features -> logits by a head tied to an embedding table (as language models tie)."""

    def __init__(self):
        super().__init__()
        self.fc, self.emb, self.head = nn.Linear(64, 16), nn.Embedding(4, 16), nn.Linear(16, 4)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.fc(x.flatten(1))))


def test_tied_weights_and_biases_stay_tied_through_finetuning(make_dataset):
    torch.manual_seed(0)
    m = TiedHead()
    done = kmeans_quantize_(m, KMeansConfig(fc_bits=5, embedding_bits=3, include=["fc.bias"], other_bits=2))
    assert done == {"fc": 5, "fc.bias": 2, "emb": 3, "head": 3}   # the tied head keeps the table's 3 bits
    assert torch.equal(m.emb.weight_codebook, m.head.weight_codebook)
    cfg = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, augment=False, progress=False,
                      verbose=False, batch_size=32)
    before = m.fc.bias_codebook.clone()
    centroid_finetune(m, make_dataset(), cfg)
    assert m.head.weight is m.emb.weight and torch.equal(m.emb.weight_codebook, m.head.weight_codebook)
    for mod, attr in [(m.fc, "weight"), (m.fc, "bias"), (m.emb, "weight")]:
        cb, w = getattr(mod, attr + "_codebook"), getattr(mod, attr)
        assert cb.numel() <= 2 ** getattr(mod, attr + "_bits") and bool(torch.isin(w[w != 0], cb).all())
    assert not torch.equal(m.fc.bias_codebook, before)          # the bias centroids trained too
