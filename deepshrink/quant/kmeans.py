"""K-means weight sharing (Han, Mao & Dally 2016, "Deep Compression", section 3).

Each layer's nonzero weights are clustered into K = 2^b shared values (the codebook); the layer
then stores only a b-bit index per weight. Pruned zeros are not clustered and stay exactly zero,
so pruning and quantization compose. Centroids start *linearly* spaced over [min, max] of the
nonzero weights — the paper found that this keeps the few large weights, which matter most,
better than density-based or random starts. Lloyd iterations in 1-D are done on sorted values:
assignment is a ``searchsorted`` against the midpoints between sorted centroids, the update a
segment mean, O(n log K) per iteration.

Centroid fine-tuning: the gradient of centroid k is the sum of the gradients of its members,

    dL/dc_k = sum_{i: I(i) = k} dL/dW_i .

:func:`centroid_finetune` implements it with a gradient hook that replaces every member's
gradient by its centroid's summed gradient; members that start equal and get the same update
under any element-wise optimizer stay equal, and a per-step callback re-ties them exactly. The
result is read back as the codebook. Biases and BatchNorm train as usual.

State on a quantized layer (the convention the .dsz codec reads): buffer ``weight_codebook``
(K,) fp32, sorted; attribute ``weight_bits`` (b); every nonzero weight is a codebook entry.
Any other parameter ``<p>`` shared the same way (an embedding table, a bias, a LayerNorm scale
matched by ``KMeansConfig.include``) gets ``<p>_codebook`` and ``<p>_bits`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..names import BITS_SUFFIX, CODEBOOK_SUFFIX
from ..train import FitResult, TrainConfig, evaluate, fit

__all__ = [
    "KMeansConfig",
    "kmeans_codebook",
    "round_codebook",
    "kmeans_quantize_",
    "quantized_layers",
    "shared_params",
    "centroid_finetune",
    "CODEBOOK_SUFFIX",
]


@dataclass
class KMeansConfig:
    """Bits per layer: ``conv_bits`` for convolutions, ``fc_bits`` for linear layers,
    ``embedding_bits`` for ``nn.Embedding`` tables, ``other_bits`` for the further parameters an
    ``include`` glob matches (``"*.bias"``); ``bits`` overrides by layer name (its weight:
    ``{"fc1": 4}``) or parameter name (``{"fc1.bias": 6}``); 0 leaves a tensor in fp32, and a
    parameter an ``exclude`` glob matches always stays fp32. A glob (fnmatch, ``*`` crosses dots)
    matches a parameter's name or its layer's name; one that matches nothing is an error. The
    paper's LeNet and AlexNet setting is 8-bit conv, 5-bit fc."""

    conv_bits: int = 8
    fc_bits: int = 5
    bits: dict[str, int] = field(default_factory=dict)
    iters: int = 30
    codebook_dtype: str = "float16"  # round centroids to fp16 when lossless w.r.t. the sparsity
    embedding_bits: int = 0          # nn.Embedding weights (0: left in fp32, the paper's setting)
    other_bits: int = 8              # parameters matched by ``include``
    include: list[str] = field(default_factory=list)   # further parameter-name globs to share
    exclude: list[str] = field(default_factory=list)   # parameter-name globs never shared
    linear: list[str] = field(default_factory=list)    # layer/parameter names whose codebook stays linear:
                                                       # 2^b evenly spaced values over [min, max], no Lloyd steps

    def check(self) -> None:
        for what, globs in (("include", self.include), ("exclude", self.exclude), ("linear", self.linear)):
            if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
                raise ConfigError(f"k-means {what} must be a list of parameter-name globs, got {globs!r}")
        for name, b in [("conv_bits", self.conv_bits), ("fc_bits", self.fc_bits),
                        ("embedding_bits", self.embedding_bits), ("other_bits", self.other_bits), *self.bits.items()]:
            if not isinstance(b, int) or not (b == 0 or 1 <= b <= 8):
                raise ConfigError(f"k-means bits for {name!r} must be 0 (skip) or 1..8, got {b!r}")
        if self.iters < 0:
            raise ConfigError(f"k-means iters must be >= 0, got {self.iters}")
        if self.codebook_dtype not in ("float16", "float32"):
            raise ConfigError(f"codebook_dtype must be 'float16' or 'float32', got {self.codebook_dtype!r}")


def kmeans_codebook(values: torch.Tensor, bits: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means with linear initialisation.

    values: (n,) float. Returns (centroids (K,) sorted ascending, K <= 2^bits, empty clusters
    dropped; assignment (n,) int64 into the centroids).
    """
    v = values.detach().reshape(-1).double()
    if v.numel() == 0:
        return torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.long)
    k = 2 ** bits
    lo, hi = v.min().item(), v.max().item()
    cents = torch.linspace(lo, hi, k, dtype=torch.float64) if hi > lo else v[:1].clone()
    sv, order = torch.sort(v)
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(sv, 0)])
    for _ in range(iters):
        bounds = torch.searchsorted(sv, (cents[1:] + cents[:-1]) / 2)   # (K-1,) segment ends
        starts = torch.cat([torch.zeros(1, dtype=torch.long), bounds])
        ends = torch.cat([bounds, torch.tensor([sv.numel()])])
        counts = ends - starts
        keep = counts > 0
        new = (csum[ends[keep]] - csum[starts[keep]]) / counts[keep]
        if new.numel() == cents.numel() and torch.equal(new, cents):
            break
        cents = new  # sorted: segment means of sorted data are increasing
    # final assignment against the final centroids (nearest; ties go to the lower one)
    mids = (cents[1:] + cents[:-1]) / 2
    assign_sorted = torch.searchsorted(mids, sv, right=False)
    used = torch.unique(assign_sorted)
    remap = torch.full((cents.numel(),), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    assign = torch.empty_like(assign_sorted)
    assign[order] = remap[assign_sorted]
    return cents[used].float(), assign


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _param_bits(layer: str, attr: str, module: nn.Module, cfg: KMeansConfig) -> int:
    """The bits of parameter ``attr`` of ``module`` (named ``layer``); 0: leave it in fp32."""
    full = f"{layer}.{attr}" if layer else attr
    if _matches(cfg.exclude, full, layer):
        return 0
    if full in cfg.bits:
        return cfg.bits[full]
    if attr == "weight" and layer in cfg.bits:
        return cfg.bits[layer]
    if attr == "weight" and isinstance(module, nn.Linear):
        return cfg.fc_bits
    if attr == "weight" and isinstance(module, _CONVS):
        return cfg.conv_bits
    if attr == "weight" and isinstance(module, nn.Embedding):
        return cfg.embedding_bits
    return cfg.other_bits if _matches(cfg.include, full, layer) else 0


def _matches(globs: list[str], param: str, layer: str) -> bool:
    return any(fnmatchcase(param, g) or fnmatchcase(layer, g) for g in globs)


def round_codebook(cb: torch.Tensor, dtype: str) -> torch.Tensor:
    """fp16-rounded codebook when no centroid collapses to zero or onto another one."""
    if dtype != "float16" or cb.numel() == 0:
        return cb
    r = cb.half().float()
    if (r == 0).any() or torch.unique(r).numel() != r.numel() or not torch.isfinite(r).all():
        return cb
    return r


def kmeans_quantize_(model: nn.Module, cfg: KMeansConfig | None = None) -> dict[str, int]:
    """Replace the nonzeros of each selected parameter by their centroids, in place: Conv/Linear
    weights, Embedding weights at ``embedding_bits``, ``include``d parameters (see KMeansConfig).

    Registers ``<p>_codebook`` and sets ``<p>_bits`` beside every quantized parameter; returns
    {layer name (for its weight) or parameter name: bits}. Zeros (pruned weights) stay exactly
    zero. A parameter shared by two layers (tied weights) is clustered once."""
    cfg = cfg or KMeansConfig()
    cfg.check()
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters(remove_duplicate=False)}
    unknown = (set(cfg.bits) | set(cfg.linear)) - names
    if unknown:
        raise ConfigError(f"k-means bits or linear codebooks given for unknown layers or parameters: {sorted(unknown)}")
    idle = [g for g in cfg.include + cfg.exclude if not any(fnmatchcase(n, g) for n in names)]
    if idle:
        raise ConfigError(f"k-means include/exclude globs match no layer or parameter: {idle}")
    done: dict[str, int] = {}
    codebooks: dict[int, tuple[torch.Tensor, int]] = {}           # id(parameter) -> (codebook, bits)
    for name, module in model.named_modules():
        for attr, w in list(module.named_parameters(recurse=False)):
            bits = _param_bits(name, attr, module, cfg)
            if bits == 0 or not w.is_floating_point():
                continue
            if id(w) not in codebooks:                 # a tied weight keeps its first owner's clustering
                full = f"{name}.{attr}" if name else attr
                linear = full in cfg.linear or (attr == "weight" and name in cfg.linear)
                codebooks[id(w)] = _share_(w, bits, cfg, iters=0 if linear else cfg.iters), bits
            cents, bits = codebooks[id(w)]
            module.register_buffer(attr + CODEBOOK_SUFFIX, cents.clone())
            setattr(module, attr + BITS_SUFFIX, bits)
            done[name if attr == "weight" else (f"{name}.{attr}" if name else attr)] = bits
    return done


@torch.no_grad()
def _share_(w: torch.Tensor, bits: int, cfg: KMeansConfig, iters: int) -> torch.Tensor:
    """Cluster the nonzeros of ``w`` in place (``iters`` Lloyd steps; 0: the linear codebook);
    returns the codebook (K,) on ``w``'s device."""
    flat = w.detach().reshape(-1)
    nz = flat != 0                                           # (n,) sparsity pattern
    cents, assign = kmeans_codebook(flat[nz], bits, iters)
    cents = round_codebook(cents, cfg.codebook_dtype)
    new = torch.zeros_like(flat)
    new[nz] = cents[assign].to(flat.dtype)
    w.copy_(new.view_as(w))
    return cents.to(w.device)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} of the layers carrying a ``weight_codebook``."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "weight" + CODEBOOK_SUFFIX)
            and isinstance(getattr(m, "weight" + CODEBOOK_SUFFIX), torch.Tensor)}


def shared_params(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """{parameter name: (module, attribute)} of every parameter carrying a ``<p>_codebook``."""
    out = {}
    for name, m in model.named_modules():
        for attr, _ in m.named_parameters(recurse=False):
            if isinstance(getattr(m, attr + CODEBOOK_SUFFIX, None), torch.Tensor):
                out[f"{name}.{attr}" if name else attr] = (m, attr)
    return out


def _assignments(module: nn.Module, attr: str = "weight") -> torch.Tensor:
    """(numel,) index of each weight into the codebook, -1 for zeros."""
    w = getattr(module, attr).detach().reshape(-1)
    cb = getattr(module, attr + CODEBOOK_SUFFIX)
    idx = torch.searchsorted(cb, w).clamp(max=max(cb.numel() - 1, 0))
    hit = (w != 0) & (cb.numel() > 0)
    if cb.numel():
        hit &= cb[idx] == w
    if bool(((w != 0) & ~hit).any()):
        raise ConfigError("a nonzero weight is not in its layer's codebook; run kmeans_quantize_ first")
    return torch.where(hit, idx, torch.full_like(idx, -1))


class _Tied:
    """Gradient hook + per-step re-tie for one layer's shared weights (or other parameter ``attr``)."""

    def __init__(self, module: nn.Module, attr: str = "weight"):
        self.module, self.attr, self.param = module, attr, getattr(module, attr)
        self.assign = _assignments(module, attr)                # (numel,)
        self.k = getattr(module, attr + CODEBOOK_SUFFIX).numel()
        self.valid = self.assign >= 0
        self.idx = self.assign.clamp(min=0)
        # one representative member per centroid: where to read the centroid back from
        first = torch.full((self.k,), -1, dtype=torch.long)
        pos = torch.nonzero(self.valid).reshape(-1)
        first.scatter_reduce_(0, self.idx[pos], pos, reduce="amin", include_self=False)
        self.first = first
        self.handle = self.param.register_hook(self.grad_hook)

    def grad_hook(self, grad: torch.Tensor) -> torch.Tensor:
        if self.k == 0:                                          # an all-zero (fully pruned) layer
            return torch.zeros_like(grad)
        g = grad.reshape(-1)
        summed = torch.zeros(self.k, dtype=g.dtype, device=g.device)
        summed.index_add_(0, self.idx[self.valid], g[self.valid])   # dL/dc_k = sum of members
        out = torch.where(self.valid, summed[self.idx], torch.zeros_like(g))
        return out.view_as(grad)

    def codebook(self) -> torch.Tensor:
        w = self.param.detach().reshape(-1)
        return w[self.first.clamp(min=0)]

    def retie(self) -> None:
        if self.k == 0:
            return
        with torch.no_grad():
            cb = self.codebook()
            w = self.param
            flat = torch.where(self.valid, cb[self.idx], torch.zeros_like(cb[self.idx]))
            w.copy_(flat.view_as(w))

    def finish(self, dtype: str) -> None:
        self.handle.remove()
        if self.k == 0:
            return
        cb = self.codebook()
        order = torch.argsort(cb)
        cb_sorted = round_codebook(cb[order], dtype)
        # centroids that moved onto each other merge (rare): keep the codebook strictly sorted
        cb_final, inverse = torch.unique(cb_sorted, return_inverse=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        with torch.no_grad():
            new_idx = inverse[rank[self.idx]]
            flat = torch.where(self.valid, cb_final[new_idx], torch.zeros(1, dtype=cb_final.dtype))
            self.param.copy_(flat.view_as(self.param))
        self.module.register_buffer(self.attr + CODEBOOK_SUFFIX, cb_final)


def centroid_finetune(model: nn.Module, data: Dataset, cfg: TrainConfig | None = None, teacher: nn.Module | None = None,
                      codebook_dtype: str = "float16", temperature: float = 4.0, alpha: float = 0.9,
                      loss_fn=None) -> FitResult:
    """Fine-tune the shared centroids (and the unquantized parameters) of a k-means model.

    Default optimiser: AdamW at a small LR, since a centroid's gradient sums over its members
    (thousands in a fully connected layer) and Adam's step does not scale with that sum. With a
    ``teacher`` the loss is the distillation loss against it; ``loss_fn`` is any other ``fit`` loss.
    """
    owners = list(shared_params(model).values())
    if not owners:
        raise ConfigError("the model has no k-means quantized layer (run kmeans_quantize_ first)")
    cfg = cfg or TrainConfig(epochs=1, lr=1e-4, optimizer="adam", weight_decay=0.0, warmup_epochs=0.0)
    first = {}                                  # id(parameter) -> its first owner: tied weights hook once
    for m, attr in owners:
        first.setdefault(id(getattr(m, attr)), (m, attr))
    tied = [_Tied(m, attr) for m, attr in first.values()]

    def retie(_model, _info) -> None:
        for t in tied:
            t.retie()

    if teacher is not None and loss_fn is not None:
        raise ConfigError("give a teacher or a loss_fn, not both")
    if teacher is not None:
        from ..distill import teacher_loss
        loss_fn = teacher_loss(teacher, temperature, alpha)
    try:
        result = fit(model, data, cfg, callbacks=[retie], loss_fn=loss_fn)
    finally:
        for t in tied:
            t.finish(codebook_dtype)
        for m, attr in owners:                  # a tied weight's other owners take its final codebook
            src, src_attr = first[id(getattr(m, attr))]
            m.register_buffer(attr + CODEBOOK_SUFFIX, getattr(src, src_attr + CODEBOOK_SUFFIX).clone())
    result.accuracy = evaluate(model, data.test)  # after the final fp16 rounding of the codebooks
    return result
