"""The proxy's bytes are the codec's: its estimate against a real .dsz of the same point."""

import copy

import pytest
import torch

from deepshrink.codec import dumps
from deepshrink.io import ModelInfo
from deepshrink.masks import set_mask
from deepshrink.models import build
from deepshrink.names import BITS_SUFFIX, CODEBOOK_SUFFIX
from deepshrink.quant.kmeans import kmeans_codebook
from deepshrink.search.proxy import Proxy
from deepshrink.search.space import LayerChoice


def _real_file(model, point):
    """The point built by hand (magnitude masks, k-means or linear codebooks) and written by the codec."""
    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    for name, c in point:
        w = params[name]
        flat = w.detach().reshape(-1)
        k = int(round(c.sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k:
            keep[torch.topk(flat.abs().double(), k, largest=False).indices] = False
            set_mask(m, name, keep.view_as(w).float())
        cents, assign = kmeans_codebook(flat[keep], c.bits, 30 if c.kind == "kmeans" else 0)
        cents = cents.half().float() if torch.unique(cents.half()).numel() == cents.numel() else cents
        new = torch.zeros_like(flat)
        new[keep] = cents[assign]
        with torch.no_grad():
            w.copy_(new.view_as(w))
        module = m.get_submodule(name.rpartition(".")[0])
        module.register_buffer("weight" + CODEBOOK_SUFFIX, cents)
        setattr(module, "weight" + BITS_SUFFIX, c.bits)
    return m, len(dumps(m, ModelInfo(arch="lenet300")))


def test_proxy_bytes_are_within_a_few_percent_of_the_real_file():
    torch.manual_seed(0)
    model = build("lenet300", in_features=64, num_classes=4)
    layers = ["fc1.weight", "fc2.weight", "fc3.weight"]
    before = [p.detach().clone() for p in model.parameters()]
    proxy = Proxy(model, layers, lambda m: 0.0, ModelInfo(arch="lenet300"))
    for choices in ([(0.0, 8, "kmeans")] * 3, [(0.9, 4, "kmeans"), (0.8, 3, "linear"), (0.0, 6, "kmeans")],
                    [(0.99, 2, "linear"), (0.97, 2, "kmeans"), (0.0, 2, "linear")]):
        point = tuple((n, LayerChoice(*c)) for n, c in zip(layers, choices))
        built, real = _real_file(model, point)
        est = proxy.bytes(point)
        assert est == pytest.approx(real, rel=0.05), (choices, est, real)
        # and its weights are the ones the proxy scores
        proxy.score(point)
        for n in layers:
            assert torch.equal(dict(proxy.work.named_parameters())[n], dict(built.named_parameters())[n])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))      # the model is not touched
