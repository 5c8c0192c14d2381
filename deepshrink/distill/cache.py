"""Teacher logits computed once for a whole training split, looked up by batch content.

Without augmentation the teacher's logits are a pure function of the training image, so one
pass of the teacher over the split replaces one per epoch. ``fit`` hands the loss only the
batch ``x``, not the sample indices, so lookups go by content: each image gets a 64-bit
fingerprint, a linear hash of its float32 bit patterns split in 16-bit halves,

    key(x) = sum_j lo16(bits(x_j)) * w_j + sum_j hi16(bits(x_j)) * v_j,   w, v fixed random < 2^31,

which no batch composition, order, rank share (DDP) or resume can change. A fingerprint match
is then confirmed by comparing the image itself with the stored one, so a hit is exact; any
other image (an augmented one, a hash collision) is a miss and the teacher computes its logits
live. Augmented training therefore never reads a stale target; it just gains nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save
from torch import nn

from ..atomic import atomic_write_bytes
from ..data import Split
from ..errors import FormatError
from ..train import predict

__all__ = ["fingerprint", "LogitCache", "TeacherTargets", "build_logit_cache", "load_logit_cache",
           "save_logit_cache", "cached_teacher_logits", "file_sha256"]

_CHUNK = 4096  # rows fingerprinted at a time: 4096 x 784 int64 is 25 MB


@lru_cache(maxsize=8)
def _weights(dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0x5EED0000 + dim)
    return torch.randint(0, 2 ** 31, (2, dim), generator=g, dtype=torch.int64)  # (2, D)


def fingerprint(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) images -> (N,) int64 keys; equal images give equal keys. Below 2^58 (no
    overflow) for up to 2^10 values per image; larger images wrap, which only weakens the hash."""
    n = len(x)
    flat = x.reshape(n, -1).to(torch.float32)  # logical order, whatever the memory format
    w = _weights(flat.shape[1])
    out = torch.empty(n, dtype=torch.int64)
    for lo in range(0, n, _CHUNK):
        bits = flat[lo:lo + _CHUNK].contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        out[lo:lo + _CHUNK] = ((bits & 0xFFFF) * w[0]).sum(1) + ((bits >> 16) * w[1]).sum(1)
    return out


class LogitCache:
    """Teacher logits (N, classes) for the images of ``split``, found by content."""

    def __init__(self, split: Split, logits: torch.Tensor, keys: torch.Tensor | None = None):
        if len(logits) != len(split):
            raise FormatError(f"{len(logits)} cached logits for a split of {len(split)} images")
        self.split, self.logits = split, logits
        keys = fingerprint(split.x) if keys is None else keys
        self.sorted_keys, self.order = torch.sort(keys)  # (N,), (N,)

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, classes) with rows of misses undefined, hit mask (B,) bool)."""
        b = len(x)
        k = fingerprint(x)
        pos = torch.searchsorted(self.sorted_keys, k).clamp_(max=len(self.sorted_keys) - 1)
        idx = self.order[pos]  # (B,) candidate rows of the split
        hit = self.sorted_keys[pos] == k
        same = (self.split.x[idx].reshape(b, -1) == x.reshape(b, -1)).all(1)  # exact confirmation
        return self.logits[idx], hit & same


class TeacherTargets:
    """Teacher logits for a batch: cached rows where the cache has the image, live otherwise."""

    def __init__(self, teacher: nn.Module | None, cache: LogitCache | None = None):
        self.teacher, self.cache = teacher, cache
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            self.misses += len(x)
            return self.teacher(x)
        logits, hit = self.cache.lookup(x)
        n_hit = int(hit.sum())
        self.hits += n_hit
        self.misses += len(x) - n_hit
        if n_hit == len(x):
            return logits
        if self.teacher is None:
            raise FormatError(f"{len(x) - n_hit} of {len(x)} images are not in the logit cache and no "
                              "teacher model was given (augmented batches are never cached)")
        logits = logits.clone()
        logits[~hit] = self.teacher(x[~hit])
        return logits


def build_logit_cache(teacher: nn.Module, split: Split, batch_size: int = 1000, progress: bool = False) -> LogitCache:
    """One eval-mode pass of the teacher over ``split`` (``progress``: a bar on stderr)."""
    return LogitCache(split, predict(teacher, split.x, batch_size, progress, desc="teacher logits"))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_logit_cache(cache: LogitCache, path: str | os.PathLike, meta: dict | None = None) -> None:
    keys = torch.empty_like(cache.sorted_keys)
    keys[cache.order] = cache.sorted_keys  # back to split order
    blob = st_save({"logits": cache.logits.contiguous(), "keys": keys},
                   metadata={"deepshrink-logit-cache": json.dumps(meta or {})})
    atomic_write_bytes(path, blob)


def load_logit_cache(path: str | os.PathLike, split: Split) -> LogitCache | None:
    """The cache stored at ``path`` if it was made for these very images, else None."""
    try:
        tensors = st_load(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable logit cache ({exc})") from None
    if set(tensors) != {"logits", "keys"} or len(tensors["keys"]) != len(split):
        return None
    keys = fingerprint(split.x)
    if not torch.equal(keys, tensors["keys"]):
        return None  # other data (or other normalisation): recompute
    return LogitCache(split, tensors["logits"], keys)


def cached_teacher_logits(teacher: nn.Module, split: Split, path: str | os.PathLike,
                          meta: dict | None = None) -> tuple[LogitCache, bool]:
    """Load the cache at ``path`` when it matches ``split``, else compute and store it.
    Name the file after the teacher's checkpoint hash. Returns (cache, loaded_from_file)."""
    cache = load_logit_cache(path, split)
    if cache is not None:
        return cache, True
    cache = build_logit_cache(teacher, split)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_logit_cache(cache, path, meta)
    return cache, False
