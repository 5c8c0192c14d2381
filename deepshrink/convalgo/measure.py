"""Measured peak memory and time of one call on the CPU.

The CPU build of torch has no allocator statistics (``torch.cuda.max_memory_allocated`` has no
CPU twin), so the peak is read from the profiler's memory events: with ``profile_memory=True``
every allocation and free through torch's CPU allocator is one event (its size signed, and its
time). Summing them in time order gives the bytes the call's own tensors hold at each moment;
the peak of that running sum is :func:`peak_bytes`. It sees every buffer an ATen kernel
allocates internally (copies, transposes, workspaces), and nothing allocated outside torch's
allocator (a BLAS library's private packing buffers, Python objects). Tensors alive before the
call (the input, the weights) are not counted; the returned output is.

kineto, the profiler's backend, writes two ``USDT:`` lines to stderr each time a profiling
session starts and stops; they say nothing about the call and are discarded
(:func:`_quiet_stderr`).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from ..errors import ConfigError

__all__ = ["peak_bytes", "median_ms", "interleaved_median_ms", "allocation_events"]


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block (the profiler's C++ log lines)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no real stderr (a captured one): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def allocation_events(fn: Callable[[], object]) -> tuple[object, list[int]]:
    """``fn()``'s result and the signed sizes (bytes) of every CPU allocation (+) and free (-)
    during it, in time order."""
    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        size = getattr(node.extra_fields, "alloc_size", None)
        if size is not None and type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, int(size)))
        stack.extend(node.children)
    events.sort(key=lambda e: e[0])
    return result, [size for _, size in events]


def peak_bytes(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()``'s result and the peak of the bytes its allocations held at once (see above)."""
    result, sizes = allocation_events(fn)
    live = peak = 0
    for size in sizes:
        live += size
        peak = max(peak, live)
    return result, peak


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup``."""
    return interleaved_median_ms({"fn": fn}, repeats, warmup)["fn"]


def interleaved_median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """The median wall time in milliseconds of each of ``fns`` over ``repeats`` rounds, each round
    running every function once in turn (A B C A B C ...), after ``warmup`` such rounds: a slow
    spell of a shared machine then hits every function alike instead of whichever ran during it."""
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}
