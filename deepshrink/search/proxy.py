"""A point of the search space measured without fine-tuning: its file size and its score.

For a point (:mod:`.space`) the proxy model is the dense model with each layer magnitude-pruned
to its sparsity and its nonzeros replaced by a ``bits``-bit codebook of its kind - what the Deep
Compression pipeline does before it fine-tunes. Two numbers come out:

* **bytes**: the .dsz file the point would make. Each layer's weight is encoded by the codec
  itself (:func:`deepshrink.codec.quantized.encode_quantized`: codebook, positions and codes,
  entropy-coded), so a layer's bytes are exact; the rest of the file (header, biases, the
  fp32 tensors) is measured once from a whole file and added. A layer's bytes depend only on
  its own choice, so each (layer, choice) is quantized and encoded once and cached.
* **score**: the scorer (accuracy, or fidelity on text) on the given split, with the cached
  layer tensors copied into one working model.

Fine-tuning recovers much of what the proxy loses, so the proxy orders points - a walk keeps the
moves that cost it least per byte saved (:mod:`.walk`) - while fine-tuned runs decide.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..codec import dumps
from ..codec.quantized import encode_quantized
from ..io import ModelInfo
from ..names import BITS_SUFFIX, CODEBOOK_SUFFIX
from ..quant.kmeans import kmeans_codebook, round_codebook
from .space import LayerChoice, Point

__all__ = ["Proxy"]

LLOYD_ITERS = 30          # KMeansConfig's default


class Proxy:
    """Measures points on ``model`` (not modified). ``score(model) -> float`` on the split the
    choice is made on; ``info`` goes into the one whole file the fixed bytes are measured from."""

    def __init__(self, model: nn.Module, layers: list[str], score: Callable[[nn.Module], float],
                 info: ModelInfo | None = None):
        self.dense = model
        self.work = copy.deepcopy(model).eval()
        self.params = dict(self.work.named_parameters())
        self.original = {n: self.params[n].detach().clone() for n in layers}
        self.layers, self.score_fn = list(layers), score
        self.cache: dict[tuple[str, LayerChoice], tuple[torch.Tensor, torch.Tensor, int]] = {}
        self.scores: dict[Point, float] = {}
        self.fixed = self._fixed_bytes(info or getattr(model, "deepshrink_info", None) or ModelInfo(arch="model"))
        self.evaluations = 0

    def layer(self, name: str, c: LayerChoice) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(the layer's weight under ``c``, its codebook (K,), its encoded bytes), cached."""
        key = (name, c)
        if key not in self.cache:
            w = self.original[name]
            flat = w.reshape(-1).double()
            keep = torch.ones_like(flat, dtype=torch.bool)
            k = int(round(c.sparsity * flat.numel()))
            if k > 0:                                   # the k smallest magnitudes go, as prune_ does
                keep[torch.topk(flat.abs(), k, largest=False).indices] = False
            cents, assign = kmeans_codebook(flat[keep], c.bits, LLOYD_ITERS if c.kind == "kmeans" else 0)
            cents = round_codebook(cents, "float16")     # as kmeans_quantize_ stores it
            new = torch.zeros_like(flat, dtype=w.dtype)
            new[keep] = cents[assign].to(w.dtype)
            new = new.view_as(w)
            fields, sections = encode_quantized(name, new, cents, c.bits)
            self.cache[key] = new, cents, sum(len(s.payload) for s in sections) + 16   # + its header share
        return self.cache[key]

    def _fixed_bytes(self, info: ModelInfo) -> int:
        """The file's bytes besides the quantized weights: one whole file at the start point,
        less its layers' encoded bytes."""
        probe = copy.deepcopy(self.dense)
        params = dict(probe.named_parameters())
        start = LayerChoice()
        layer_bytes = 0
        for n in self.layers:
            w, cents, b = self.layer(n, start)
            module_name, _, attr = n.rpartition(".")
            module = probe.get_submodule(module_name)
            with torch.no_grad():
                params[n].copy_(w)
            module.register_buffer(attr + CODEBOOK_SUFFIX, cents.clone())
            setattr(module, attr + BITS_SUFFIX, start.bits)
            layer_bytes += b
        return len(dumps(probe, info)) - layer_bytes

    def bytes(self, point: Point) -> int:
        return self.fixed + sum(self.layer(n, c)[2] for n, c in point)

    @torch.no_grad()
    def score(self, point: Point) -> float:
        if point not in self.scores:
            for n, c in point:
                self.params[n].copy_(self.layer(n, c)[0])
            self.scores[point] = float(self.score_fn(self.work))
            self.evaluations += 1
        return self.scores[point]
