"""The search's two loops, as pure functions of callables: a greedy walk and a bisection.

**The walk** (in the spirit of NetAdapt, Yang et al. 2018, and of the greedy allocation of
:func:`deepshrink.prune.choose_sparsities`): from the dense point, every one-notch move of every
layer (:func:`.space.moves`) is measured by the proxy (size and score without fine-tuning), and
the move with the least score lost per byte saved is taken,

    cost(move) = max(score(now) - score(move), 0) / (bytes(now) - bytes(move)),

ties to the larger saving. The walk records each point it takes - a path of ever smaller files -
and stops when the proxy score has fallen ``stop_drop`` below the start, the file is
``min_bytes`` or smaller, or no move saves a byte.

**The bisection** (:func:`furthest_feasible`): fine-tuning is what decides, and it costs minutes a
point, so only a few path points are fine-tuned. Along the path the fine-tuned score falls (not
strictly, but close), so the furthest point within the accuracy floor is found by bisection
between the furthest known feasible and the nearest known infeasible index, starting from a
guess; ``budget`` fine-tunings at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tqdm import tqdm

from .space import Point, moves

__all__ = ["PathPoint", "greedy_path", "furthest_feasible"]


@dataclass
class PathPoint:
    point: Point
    bytes: int
    proxy: float            # the proxy score (no fine-tuning)
    move: str               # "start", or "<layer> <what>"


def greedy_path(start: Point, prunable: set[str], size: Callable[[Point], int], score: Callable[[Point], float],
                stop_drop: float, min_bytes: int = 0, max_steps: int = 1000, progress: bool = False) -> list[PathPoint]:
    """The walk from ``start`` (module docstring); ``stop_drop`` in score units."""
    now = PathPoint(start, size(start), score(start), "start")
    path = [now]
    bar = tqdm(total=None, desc="search walk", unit="step", disable=not progress, leave=False)
    for _ in range(max_steps):
        if now.proxy < path[0].proxy - stop_drop or now.bytes <= min_bytes:
            break
        best = None
        for layer, what, new in moves(now.point, prunable):
            saved = now.bytes - size(new)
            if saved <= 0:
                continue
            s = score(new)
            key = (max(now.proxy - s, 0.0) / saved, -saved)
            if best is None or key < best[0]:
                best = (key, PathPoint(new, now.bytes - saved, s, f"{layer.removesuffix('.weight')} {what}"))
        if best is None:
            break
        now = best[1]
        path.append(now)
        bar.update(1)
        bar.set_postfix(bytes=now.bytes, score=f"{now.proxy:.4f}")
    bar.close()
    return path


def furthest_feasible(n: int, feasible: Callable[[int], bool], first_guess: int, budget: int,
                      known_feasible: int = -1) -> int | None:
    """The largest index in ``[0, n)`` found feasible by bisection (see the module docstring),
    trying ``first_guess`` first and calling ``feasible`` at most ``budget`` times; ``known_feasible``:
    an index already known to be feasible (-1: none). None when no tried index was feasible."""
    lo, hi = known_feasible, n          # lo: furthest feasible so far; hi: nearest infeasible so far
    guess = min(max(first_guess, lo + 1), n - 1)
    best = known_feasible if known_feasible >= 0 else None
    for _ in range(budget):
        if not lo < guess < hi:
            break
        if feasible(guess):
            lo, best = guess, guess
        else:
            hi = guess
        if hi - lo <= 1:
            break
        guess = (lo + hi) // 2
    return best
