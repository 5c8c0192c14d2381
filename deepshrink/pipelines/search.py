"""``deepshrink search`` as one call: target-driven compression under an accuracy floor.

The goal is one of: a compression ratio (``target_ratio``: fp32 parameter bytes / file bytes),
a file size in bytes (``target_size``), a peak inference memory in bytes (``target_memory``), or
the competition's score (``maximize="score"``, :mod:`deepshrink.score`); the floor is
``max_drop`` percentage points of the validation score below the dense model's.

1. A validation split is carved from the training split (:func:`deepshrink.data.with_validation`);
   every choice below is made on it, and the fine-tunings never see it.
2. **The defaults first**: the Deep Compression pipeline exactly as ``deepshrink compress
   --max-drop`` runs it (:func:`deepshrink.compress.compress`: sensitivity allocation, AGP
   pruning with fine-tuning, k-means sharing with centroid fine-tuning, its retries). It is the
   first candidate, so the search never returns less than the defaults give.
3. **Walk** (:mod:`deepshrink.search.walk`): from the defaults' fine-tuned model (from the dense
   model when the defaults missed the floor), one notch of one layer at a time - sparsity, bits
   (8 to 2), linear or k-means codebook (:mod:`deepshrink.search.space`) - by the least proxy
   score lost per byte saved; each point's bytes are the codec's own and its score is measured
   without further fine-tuning on ``proxy_size`` validation images (:mod:`deepshrink.search.proxy`).
   Starting from weights already fine-tuned to their sparsity keeps the proxy close to what
   fine-tuning then reaches (measured from the dense model instead, the proxy collapses at
   sparsities that fine-tune well, and the walk spends its bytes on bits). The result is a
   path of ever smaller candidate files.
4. **Fine-tune** a few path points (``budget``, the defaults included) with the same pipeline
   and the point's per-layer sparsities, bits and codebook kinds, starting again from the dense
   model, scored on the whole validation split. For the score and the ratio the furthest point
   within the floor is found by bisection along the path; for a size target, the first point
   that reaches it.
5. The chosen model is written as ``.dsz``; the test split is evaluated once, for the figure
   reported. Beside the file: its recipe (``OUT.recipe.yaml``, a ``compress`` step that
   ``deepshrink run`` replays to the same weights), every candidate (``OUT.search.json``), the
   Pareto plot (``OUT.pareto.png``: validation score against file size for the walk and the
   fine-tuned points, and against measured batch-1 latency) and an HTML page.

Channel removal (``channels``): before all of this, that fraction of the MACs is removed by
channel pruning (``deepshrink prune-channels --macs-target``, fine-tuned on the training images
left after the validation split), and the search runs on the smaller model; the floor, sizes,
memory and score stay measured against the original. The recipe then starts with that
``prune-channels`` step.

Peak memory: weights pruned to zeros and shared decode to the same fp32 tensors and keep every
activation, so fine-grained compression leaves the peak inference memory where it was (it is
measured, not assumed: :func:`deepshrink.profile.peak_memory`). Channel removal is what lowers it:
a ``target_memory`` below what the model (after ``channels``, if given) needs is refused with the
measured figure.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..codec import dumps, save_compressed
from ..compress import CompressConfig, compress
from ..data import Dataset, val_label, with_validation
from ..errors import ConfigError
from ..holdout import warn_if_trained_on
from ..io import ModelInfo, load_model
from ..masks import squash
from ..modelfile import example_input
from ..profile.latency import measure_latency
from ..profile.peak_memory import peak_memory
from ..score import Gates, score as competition_score
from ..scoring import scorer_for
from ..search.proxy import Proxy
from ..search.space import SPARSITY_STEPS, LayerChoice, compress_fields, describe, start_point
from ..search.walk import furthest_feasible, greedy_path
from ..targets import prunable_weights
from ..train import seed_everything
from ..prune import ChannelConfig
from .inputs import open_model_and_data
from .prune_channels import prune_channels_file
from .search_output import write_outputs

__all__ = ["SearchConfig", "Candidate", "SearchResult", "search", "search_file", "GOALS", "fp32_bytes",
           "inference_memory"]

GOALS = ("ratio", "size", "memory", "score")


@dataclass
class SearchConfig:
    max_drop: float = 0.5                 # pp of the validation score below the dense model's
    target_ratio: float | None = None     # fp32 parameter bytes / file bytes
    target_size: int | None = None        # file bytes
    target_memory: int | None = None      # peak inference bytes at batch 1
    maximize: str | None = None           # "score"; the default goal when no target is given
    budget: int = 4                       # fine-tuned candidates at most
    proxy_size: int = 2000                # validation images the walk's proxy scores on
    stop_drop: float = 30.0               # the walk stops this many pp of proxy score below the dense model
    guess_drop: float | None = None       # the first point fine-tuned after the defaults: where the proxy has lost
                                          # this many pp more (None: twice max_drop, at least 0.5)
    val_size: int | None = None           # None: 10% of the training split, at most 5,000
    channels: float | None = None         # remove this fraction of the MACs by channel pruning first (None: none)
    prune_epochs: int = 10
    centroid_epochs: int = CompressConfig.centroid_epochs
    prune_lr: float | None = None
    augment: bool | None = None
    seed: int = 0
    progress: bool = True
    verbose: bool = True

    @property
    def goal(self) -> str:
        return ("ratio" if self.target_ratio is not None else "size" if self.target_size is not None else
                "memory" if self.target_memory is not None else "score")

    def check(self) -> None:
        given = [k for k in ("target_ratio", "target_size", "target_memory", "maximize") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"search has one goal: give one of target_ratio, target_size, target_memory or "
                              f"maximize, not {' and '.join(given)}")
        if self.maximize not in (None, "score"):
            raise ConfigError(f"maximize: only 'score' can be maximized, got {self.maximize!r}")
        for name in ("target_ratio", "target_size", "target_memory"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if not (0 <= self.max_drop < math.inf and self.budget >= 1 and self.proxy_size >= 1):
            raise ConfigError(f"need max_drop >= 0, budget >= 1 and proxy_size >= 1 "
                              f"(got {self.max_drop}, {self.budget}, {self.proxy_size})")
        if self.channels is not None and not 0 < self.channels < 1:
            raise ConfigError(f"channels is the fraction of MACs removed by channel pruning, in (0, 1); got {self.channels}")
        if not (self.stop_drop > 0 and (self.guess_drop is None or self.guess_drop >= 0)):
            raise ConfigError("need stop_drop > 0 and guess_drop >= 0")


@dataclass
class Candidate:
    index: int                  # on the walk's path
    fields: dict                # the CompressConfig fields it was fine-tuned with
    described: str
    proxy_bytes: int
    proxy_score: float
    val_score: float            # after fine-tuning, on the whole validation split
    drop_pp: float
    file_bytes: int
    ratio: float
    latency_ms: float           # batch 1, median
    feasible: bool
    score: dict | None = None   # the competition score's parts
    seconds: float = 0.0


@dataclass
class SearchResult:
    model: nn.Module
    goal: str
    chosen: Candidate | None
    candidates: list[Candidate]
    path: list[dict]            # the walk: {"bytes", "proxy", "move"}
    dense_val: float
    dense_test: float
    test_after: float | None
    dense_bytes: int            # fp32 parameter bytes (S)
    dense_memory: int           # peak inference bytes at batch 1 (M)
    metric: str
    val_on: str
    test_on: str
    met: bool
    seconds: float
    evaluations: int            # proxy evaluations
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "model"}


def _say(cfg: SearchConfig, text: str) -> None:
    if cfg.verbose:
        print(text, flush=True)


def fp32_bytes(model: nn.Module) -> int:
    """S: the model's floating-point parameters as fp32 bytes."""
    return 4 * sum(p.numel() for p in model.parameters() if p.is_floating_point())


def inference_memory(model: nn.Module, info: ModelInfo) -> int:
    """M or m: predicted peak memory of one batch-1 forward, masks and codebooks dropped (as at inference)."""
    clean = squash(copy.deepcopy(model))      # masks and codebooks are not needed to run it
    return peak_memory(clean, example_input(info)).predicted_peak_bytes


def _layers(model: nn.Module) -> list[str]:
    """The weights a .dsz shares: every Conv/Linear weight."""
    return [f"{n}.weight" for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.weight is not None]


def search(model: nn.Module, data: Dataset, info: ModelInfo, cfg: SearchConfig | None = None,
           trained: dict | None = None, original: nn.Module | None = None) -> SearchResult:
    """The search on ``model`` (not modified); see the module docstring. ``original``: the model
    ``model`` was made from (by channel pruning), against which the floor, the sizes, the memory
    and the score are measured (default: ``model`` itself)."""
    cfg = cfg or SearchConfig()
    cfg.check()
    t0 = time.perf_counter()
    data = with_validation(data, cfg.val_size)
    dense = copy.deepcopy(model).eval()
    reference = (original if original is not None else model).eval()
    score = scorer_for(data, None if data.labelled else reference)
    dense_val = score(reference, data.val)
    S, M = fp32_bytes(reference), inference_memory(reference, info)
    m_start = M if original is None else inference_memory(dense, info)
    if cfg.goal == "memory" and cfg.target_memory < m_start:
        raise ConfigError(
            f"target memory {cfg.target_memory:,} B is below the {m_start:,} B this model needs at batch 1 (measured); "
            "pruning weights and sharing them leave that unchanged (the weights decode to fp32 and every "
            "activation keeps its size). Remove channels first (--channels F, or deepshrink prune-channels)")
    target_bytes = (S / cfg.target_ratio if cfg.goal == "ratio" else cfg.target_size if cfg.goal == "size" else None)
    layers = _layers(dense)
    prunable = set(prunable_weights(dense))
    gates = Gates.relative(dense_val, S)
    tried: dict[int, Candidate] = {}
    models: dict[int, nn.Module] = {}
    x1 = example_input(info)
    base = dict(max_drop=cfg.max_drop, prune_epochs=cfg.prune_epochs, centroid_epochs=cfg.centroid_epochs,
                prune_lr=cfg.prune_lr, augment=cfg.augment, val_size=len(data.val), seed=cfg.seed,
                progress=cfg.progress, verbose=False)

    def run(i: int, ccfg: CompressConfig, fields: dict, described: str, proxy_bytes: int, proxy_score: float):
        ta = time.perf_counter()
        seed_everything(cfg.seed)
        res = compress(dense, data, ccfg, trained, report_test=False)
        val = res.val_accuracy_after
        nbytes = len(dumps(res.model, info))
        drop = (dense_val - val) * 100
        mem = inference_memory(res.model, info)
        sc = competition_score(M, mem, S, nbytes, min(max(val, 0.0), 1.0), gates)
        ok = (drop <= cfg.max_drop and (target_bytes is None or nbytes <= target_bytes)
              and (cfg.target_memory is None or mem <= cfg.target_memory))
        lat = measure_latency(squash(copy.deepcopy(res.model)).eval(), x1, warmup=3, repeats=15).median_ms
        tried[i] = Candidate(i, fields, described, proxy_bytes, proxy_score, val, drop, nbytes, S / nbytes, lat, ok,
                             sc.to_dict(), time.perf_counter() - ta)
        models[i] = res.model
        _say(cfg, f"  validation {score.name} {dense_val * 100:.2f}% -> {val * 100:.2f}% ({-drop:+.2f} pp), "
                  f"{nbytes:,} B ({S / nbytes:.1f}x), score {sc.score:,.1f}: {'within' if ok else 'outside'} the goal")
        return res, ok

    # 1. the pipeline's own defaults, as `deepshrink compress --max-drop` would run them
    _say(cfg, f"[fine-tune 1/{cfg.budget}] compress's defaults (sensitivity allocation, its bits and retries)")
    res0, ok0 = run(-1, CompressConfig(**base), {}, "compress's defaults", 0, math.nan)
    # 2. the walk: from the defaults' fine-tuned model when it is within the goal's floor, else from the dense one
    if ok0 or (res0.within_budget and target_bytes is not None):
        start_model, start = res0.model, _point_of(res0.model, layers, res0.bits)
    else:
        start_model, start = dense, start_point(layers)
    tried[-1].described = f"compress's defaults: {describe(start) if start_model is res0.model else '(over the floor)'}"
    proxy_split = data.val.take(cfg.proxy_size)
    proxy = Proxy(start_model, layers, lambda m: score(m, proxy_split), info)
    _say(cfg, f"[walk] from {'the defaults' if start_model is res0.model else 'the dense model'}: {len(layers)} layers, "
              f"sparsity, bits 8-2 and codebook kind one notch at a time, by proxy {score.name} (no further "
              f"fine-tuning) on {len(proxy_split)} validation images")
    path = greedy_path(start, prunable, proxy.bytes, proxy.score, stop_drop=cfg.stop_drop / 100,
                       min_bytes=int(target_bytes * 0.5) if target_bytes else 0, progress=cfg.progress)
    _say(cfg, f"  {len(path)} points, {proxy.evaluations} proxy evaluations: {path[0].bytes:,} -> {path[-1].bytes:,} B, "
              f"proxy {path[0].proxy * 100:.2f}% -> {path[-1].proxy * 100:.2f}%")
    tried[-1].proxy_bytes, tried[-1].proxy_score = (path[0].bytes, path[0].proxy) if start_model is res0.model else (
        tried[-1].file_bytes, math.nan)

    def finetune(i: int) -> bool:
        p = path[i]
        fields = compress_fields(p.point)
        _say(cfg, f"[fine-tune {len(tried) + 1}/{cfg.budget}] path point {i} of {len(path) - 1}: {describe(p.point)}")
        return run(i, CompressConfig(attempts=1, **base, **fields), fields, describe(p.point), p.bytes, p.proxy)[1]

    known = 0 if start_model is res0.model and ok0 else -1      # the path's start is the defaults' own point
    if cfg.budget > 1 and len(path) > 1:
        if target_bytes is not None:
            if not ok0:
                finetune(next((i for i, p in enumerate(path) if p.bytes <= target_bytes), len(path) - 1))
        else:
            drop = cfg.guess_drop if cfg.guess_drop is not None else max(0.5, 2 * cfg.max_drop)
            guess = next((i for i, p in enumerate(path) if (path[0].proxy - p.proxy) * 100 > drop), len(path) - 1)
            furthest_feasible(len(path), finetune, guess, cfg.budget - 1, known_feasible=known)
    feasible = [c for c in tried.values() if c.feasible]
    chosen = (max(feasible, key=lambda c: (c.score["score"], c.val_score)) if cfg.goal == "score" else
              max(feasible, key=lambda c: c.val_score) if cfg.goal in ("size", "memory") else
              max(feasible, key=lambda c: (c.ratio, c.val_score))) if feasible else None
    best = chosen or (max(tried.values(), key=lambda c: c.val_score) if tried else None)
    out_model = models[best.index] if best is not None else dense
    dense_test = score(reference, data.test)
    test_after = score(out_model, data.test) if best is not None else None    # once, for the reported figure
    met = chosen is not None
    _say(cfg, f"  test {score.name} {dense_test * 100:.2f}% -> {test_after * 100:.2f}% (reported only: every "
              f"choice was made on {val_label(data)})" if test_after is not None else "  nothing was fine-tuned")
    return SearchResult(out_model, cfg.goal, best, sorted(tried.values(), key=lambda c: c.index),
                        [{"bytes": p.bytes, "proxy": p.proxy, "move": p.move} for p in path], dense_val, dense_test,
                        test_after, S, M, score.name, val_label(data),
                        f"the test split ({len(data.test)} {'images' if data.labelled else 'samples'})", met,
                        time.perf_counter() - t0, proxy.evaluations, asdict(cfg))


def _as_written(result: SearchResult, size: int) -> None:
    """The written candidate's bytes, ratio and score from the file itself (its header also holds
    the search's own record, a few bytes more than the candidate was measured with)."""
    c = result.chosen or max(result.candidates, key=lambda k: k.val_score)
    sc = c.score
    gates = Gates.relative(result.dense_val, result.dense_bytes)
    c.file_bytes, c.ratio = size, result.dense_bytes / size
    c.score = competition_score(sc["original_memory"], sc["memory"], sc["original_size"], size, sc["accuracy"],
                                gates).to_dict()


def channel_config(cfg: SearchConfig) -> ChannelConfig:
    """The channel-pruning step of a search with ``channels``: the MACs kept, fine-tuned on the
    training images left after the validation split (recorded in the recipe as it ran)."""
    return ChannelConfig(macs_target=round(1 - cfg.channels, 6), epochs=cfg.prune_epochs, hold_out=True,
                         val_size=cfg.val_size, seed=cfg.seed, progress=cfg.progress, verbose=cfg.verbose)


def _remove_channels(src, out, cfg: SearchConfig, data, arch, trust_code, model_kwargs, seq_len, tokenizer):
    """Run the channel step exactly as a recipe's ``prune-channels`` step runs it (so the recipe
    replays it), into a temporary file beside ``out``; returns (model, info) read back."""
    _say(cfg, f"[channels] removing {cfg.channels:.0%} of the MACs by channel pruning, fine-tuned "
              f"{cfg.prune_epochs} epochs on the training images left after the validation split")
    with tempfile.TemporaryDirectory(prefix=".search-", dir=Path(out).parent) as tmp:
        step = Path(tmp) / "channels.safetensors"
        seed_everything(cfg.seed)
        prune_channels_file(src, step, channel_config(cfg), data=data, arch=arch, trust_code=trust_code,
                            model_kwargs=model_kwargs, seq_len=seq_len, tokenizer=tokenizer)
        return load_model(step, trust_code=trust_code or arch is not None)


def _point_of(model: nn.Module, layers: list[str], bits: dict[str, int]):
    """A compressed model's own point: each layer's sparsity and bits as they are, k-means codebooks."""
    params = dict(model.named_parameters())
    out = []
    for n in layers:
        w = params[n]
        layer = n[: -len(".weight")]
        # a layer global pruning emptied reads as the space's highest step: a sparsity map stops below 1
        s = min(float((w == 0).sum()) / w.numel(), SPARSITY_STEPS[-1])
        out.append((n, LayerChoice(s, int(bits.get(layer, bits.get(n, 8))), "kmeans")))
    return tuple(out)


def search_file(src: str | os.PathLike, out: str | os.PathLike, cfg: SearchConfig | None = None, *,
                data: str | None = None, arch: str | None = None, trust_code: bool = False,
                model_kwargs: dict | None = None, seq_len: int | None = None,
                tokenizer: str | None = None) -> tuple[SearchResult, dict[str, Path]]:
    """Load ``src``, :func:`search`, write ``out`` (.dsz) and the files beside it (module docstring)."""
    cfg = cfg or SearchConfig()
    cfg.check()
    if Path(out).suffix != ".dsz":
        raise ConfigError(f"{out}: search writes a .dsz file; name --out accordingly")
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer,
                                          need_labels=False, model_kwargs=model_kwargs)
    ds = with_validation(ds, cfg.val_size)
    warn_if_trained_on(src, info, ds)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    original = None
    if cfg.channels is not None:
        original, (model, info) = model, _remove_channels(src, out, cfg, data, arch, trust_code, model_kwargs,
                                                          seq_len, tokenizer)
    result = search(model, ds, info, cfg, info.train_config(), original=original)
    if result.chosen is not None or result.candidates:
        info.record("search", cfg, goal=result.goal, met=result.met, accuracy=result.test_after,
                    accuracy_on="test", val_accuracy=result.chosen.val_score if result.chosen else None,
                    val_on=result.val_on, candidates=len(result.candidates))
        save_compressed(result.model, out, info)
        _as_written(result, os.path.getsize(out))
    paths = write_outputs(result, Path(out), src, data)
    return result, paths
