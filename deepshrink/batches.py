"""Seeded batches over in-memory splits, and the image augmentation used while training.

The batch order is a pure function of (seed, epoch); under DDP each rank takes an equal strided
share of the permutation. Augmentation (random shift and horizontal flip) is one gather for the
whole batch, seeded per (seed, epoch, batch, rank).
"""

from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["augment_batch", "iterate_batches", "num_batches"]


def augment_batch(x: torch.Tensor, gen: torch.Generator, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding) and horizontal flip.

    x: (N, C, H, W). Vectorised: one gather for the whole batch.
    """
    n, c, h, w = x.shape
    if shift > 0:
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))  # (N, C, H+2s, W+2s)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (N, H)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (N, W)
        idx_r = rows[:, None, :, None].expand(n, c, h, w + 2 * shift)
        x = padded.gather(2, idx_r)
        idx_c = cols[:, None, None, :].expand(n, c, h, w)
        x = x.gather(3, idx_c)
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def iterate_batches(
    split,                      # a deepshrink.data.Split: .x (N, ...), .y (N,)
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world: int = 1,
    augment: bool = False,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; the order is a pure function of (seed, epoch).

    With ``world > 1`` each rank takes an equal strided share of the permutation, so every
    rank runs the same number of steps. ``start`` skips that many batches (resuming).
    """
    n = len(split)
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.arange(n)
    if world > 1:
        per = n // world
        order = order[rank::world][:per]
    for b, lo in enumerate(range(0, len(order), batch_size)):
        if b < start:
            continue
        idx = order[lo:lo + batch_size]
        x = split.x[idx]
        if augment and x.dim() == 4:  # shifts and flips only make sense for images
            g = torch.Generator().manual_seed(_mix(seed, epoch, b, rank))
            x = augment_batch(x, g)
        yield x, split.y[idx]


def _mix(*parts: int) -> int:
    """A 63-bit generator seed from integers (distinct tuples give distinct streams)."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (1 << 63)
    return h


def num_batches(n: int, batch_size: int, world: int = 1) -> int:
    per = n // world if world > 1 else n
    return (per + batch_size - 1) // batch_size
