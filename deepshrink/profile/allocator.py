"""What c10's CPU allocator itself records during a forward pass: every allocation and free, in
order, with the step (the aten op) it happened in.

PyTorch has no allocator statistics on CPU (``torch.cuda.max_memory_allocated`` has no CPU
twin), but with memory profiling on, c10's ``ProfiledCPUMemoryReporter`` reports each
allocation and each free of a block it saw allocated to the profiler as a ``[memory]`` event
with its size (negative for a free) - PyTorch's "profile_memory" (docs: ``torch.profiler``,
"profile_memory - track tensor memory allocation/deallocation"). Summing those events in time
order gives the bytes the forward pass allocated and still holds at every moment, op
workspaces (a convolution's im2col buffer, a GEMM's packed copy) included; the running total
starts at 0, so what was allocated before the forward (weights, the input) is not in it.

The tracer (:mod:`deepshrink.profile.peak_memory`) wraps each aten op it runs in a
``record_function`` marker named ``STEP_PREFIX + index``; an event belongs to the step whose
marker began last before it (a free between two ops, to the op before).

The legacy (non-Kineto) profiler is used: same memory events, and starting it takes
milliseconds instead of a second. Its start and stop print a trace line on stderr from C++
("profiler_start"), which :func:`_quiet_stderr` keeps off the user's terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch._C._autograd import DeviceType

__all__ = ["AllocatorRecorder", "STEP_PREFIX"]

STEP_PREFIX = "deepshrink.step:"


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the duration (the profiler's C++ start/stop lines)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):        # no real descriptor 2 (an embedded interpreter): leave it
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class AllocatorRecorder:
    """``with AllocatorRecorder() as rec: ...`` records the CPU allocator's events; ``rec.mark(i)``
    is the marker to run step ``i`` in; after the block, :meth:`per_step` gives the peaks.

    ``available`` is False when the profiler was not started (a profiler is running already - the
    caller's, left alone - or this build of PyTorch has no memory profiling): results are None.
    """

    def __init__(self):
        self.available = False
        self._prof = None
        self._events = None

    def __enter__(self) -> "AllocatorRecorder":
        if torch.autograd._profiler_enabled():      # the user's own profiler: never stop it
            return self
        try:
            prof = torch.autograd.profiler.profile(use_cpu=True, profile_memory=True, use_kineto=False)
            with _quiet_stderr():
                prof.__enter__()
        except (RuntimeError, TypeError, AssertionError):
            return self
        self._prof, self.available = prof, True
        return self

    def __exit__(self, *exc) -> None:
        if self._prof is None:
            return
        with _quiet_stderr():
            self._prof.__exit__(None, None, None)
        try:
            self._events = list(self._prof.kineto_results.events())
        except (AttributeError, RuntimeError):
            self.available = False

    def mark(self, step: int):
        """The context to run step ``step`` in (a no-op when the allocator is not recorded)."""
        if not self.available:
            return contextlib.nullcontext()
        return torch.autograd.profiler.record_function(f"{STEP_PREFIX}{step}")

    def per_step(self, steps: int) -> list[int] | None:
        """For each of ``steps`` steps, the most bytes the forward had allocated (and not freed)
        at any moment of it; None when nothing was recorded or a step marker is missing."""
        if not self.available or self._events is None:
            return None
        starts: list[tuple[int, int]] = []              # (time, step) of each step marker
        memory: list[tuple[int, int]] = []              # (time, +bytes allocated / -bytes freed)
        for e in self._events:
            name = e.name()
            if name == "[memory]" and e.device_type() == DeviceType.CPU:
                memory.append((e.start_ns(), e.nbytes()))
            elif name.startswith(STEP_PREFIX):
                starts.append((e.start_ns(), int(name[len(STEP_PREFIX):])))
        if sorted(s for _, s in starts) != list(range(steps)):
            return None
        starts.sort()
        memory.sort(key=lambda tb: tb[0])
        peaks, total, j = [0] * steps, 0, 0
        for k, (_, step) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else None
            peaks[step] = total                         # what is held as the step begins
            while j < len(memory) and (end is None or memory[j][0] < end):
                total += memory[j][1]                   # (events before the first marker: step 0's)
                peaks[step] = max(peaks[step], total)
                j += 1
        return peaks
