"""Peak inference memory of one forward pass, predicted from its op graph and measured, in total
and per layer (``deepshrink profile --memory``).

Every number is in bytes and includes what stays resident for the whole pass: the weights
(parameters and buffers at their in-memory dtype, each storage once; a fake-quantized model holds
fp32) and any other tensor the model reads but did not create. The input is held by the caller
for the whole pass, so it counts throughout. The pass runs once, in eval mode under
``torch.no_grad()`` (inference: no autograd graph keeps activations), on CPU; the ops and every
tensor's storage are seen by a ``TorchDispatchMode`` (PyTorch's ``torch.utils._python_dispatch``,
the mechanism of its FLOP counter), the module calls by forward hooks, so any ``nn.Module``
works, fx-traceable or not.

* **predicted**: resident + the most activation bytes alive at any aten op. A storage is alive
  from the op that allocates it to its last use (liveness as in a static memory planner), or -
  if later - to the end of the last module call it was passed to: eager PyTorch's caller holds a
  module's arguments until it returns (``nn.Sequential`` does ``input = module(input)``; a
  residual block keeps ``x`` for its shortcut). Views and in-place ops allocate nothing and extend
  the life of the storage they alias; the output lives to the end. ``predicted_last_use`` frees
  every storage at its last use: the floor a planner could reach. Workspaces an op allocates and
  frees inside itself are not in the graph and not predicted.
* **measured**: resident + the peak bytes of the storages the pass created that were still
  referenced, tracked by ``weakref.finalize`` on every op's outputs: a storage is freed when the
  last tensor viewing it is garbage-collected (real Python lifetimes), workspaces not seen.
* **allocator**: resident + input + the peak of what c10's CPU allocator had handed out during
  the pass, from its own allocation/free events (:mod:`deepshrink.profile.allocator`): real frees
  and op workspaces (oneDNN's blocked-layout convolution buffers, reordered weights) included.

Per layer (:class:`deepshrink.profile.memory_table.MemoryRow`): each leaf module call, and each
run of ops between leaves (``<module>.<op>``, e.g. a residual ``add``), with its peaks and the
activations still alive after it.

Where predicted and measured part: Python code that keeps a tensor in a local variable past its
last use holds it longer than any op graph shows - a model's ``forward`` keeping ``x`` while
later stages run, the loop of an adder layer (:func:`deepshrink.nn.adder.adder_rows` keeps the
last block's ``d`` while building the next), fake quantization's intermediate codes. Measured
sees it; predicted cannot (on the zoo's nn layers they agree: ``benchmarks/peak_memory.py``).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import ConfigError
from .allocator import AllocatorRecorder
from .memory_table import MemoryRow, PeakMemory
from .profiler import _is_leaf

__all__ = ["peak_memory", "resident_bytes"]


def _ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, ValueError):   # no storage: meta, lazy or a subclass
        return 0


def resident_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers as held in memory, each storage counted once."""
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = _ptr(t)
        if ptr:
            seen[ptr] = t.untyped_storage().nbytes()
    return sum(seen.values())


class _Trace(TorchDispatchMode):
    """Records each aten op: its row, the storages it reads and allocates, the tracked live bytes."""

    def __init__(self, model: nn.Module, allocator: AllocatorRecorder):
        super().__init__()
        self.allocator = allocator
        self.resident = {_ptr(t): t.untyped_storage().nbytes()
                         for t in list(model.parameters()) + list(model.buffers()) if _ptr(t)}
        self.sizes: list[int] = []                # storage id -> bytes
        self.born: list[int] = []                 # storage id -> step that allocated it (-1: input)
        self.last: list[int] = []                 # storage id -> last step that read or aliased it
        self.held: list[int] = []                 # storage id -> last step of a module call it was an argument of
        self.calls: list[list[int]] = []          # the module calls running now: their arguments' storage ids
        self.refs: list[int] = []                 # storage id -> tracked tensors still alive
        self.live: dict[int, int] = {}            # data_ptr -> id of the storage alive there
        self.live_bytes = 0
        self.tracked: list[int] = []              # step -> tracked live bytes after its outputs
        self.before: list[int] = []               # step -> tracked live bytes as it starts
        self.step_row: list[int] = []             # step -> row index
        self.rows: list[MemoryRow] = []
        self.names: dict[str, int] = {}
        self.leaf: nn.Module | None = None       # the leaf layer running now
        self.between: str | None = None           # the row of the ops running between layers now
        self.stack: list[str] = []
        self.finalizers: list[weakref.finalize] = []

    # -- rows
    def new_row(self, name: str, kind: str) -> None:
        self.names[name] = self.names.get(name, 0) + 1
        unique = name if self.names[name] == 1 else f"{name}#{self.names[name]}"
        self.rows.append(MemoryRow(unique, kind))

    def _row_for(self, func) -> int:
        if self.leaf is None:                      # an op between layers: one row per run of it
            op = str(getattr(func, "overloadpacket", func)).split(".")[-1]
            name = f"{self.stack[-1]}.{op}" if self.stack and self.stack[-1] else op
            if self.between != name:
                self.new_row(name, op)
                self.between = name
        return len(self.rows) - 1

    # -- storages
    def adopt(self, t: torch.Tensor, step: int) -> int | None:
        """The storage id of ``t`` (a new one if its storage is new), tracking its lifetime."""
        ptr = _ptr(t)
        if not ptr or ptr in self.resident:
            return None
        sid = self.live.get(ptr)
        if sid is None:
            sid = len(self.sizes)
            nbytes = t.untyped_storage().nbytes()
            self.sizes.append(nbytes)
            self.born.append(step)
            self.last.append(step)
            self.held.append(step)
            self.refs.append(0 if step >= 0 else 1)  # the input: the caller holds it throughout
            self.live[ptr] = sid
            self.live_bytes += nbytes
            if step >= 0:
                self.rows[self.step_row[step]].allocated_bytes += nbytes
        if step >= 0:                               # the input stays referenced by the caller
            self.refs[sid] += 1
            self.finalizers.append(weakref.finalize(t, self._release, ptr, sid))
        return sid

    def _release(self, ptr: int, sid: int) -> None:
        self.refs[sid] -= 1
        if self.refs[sid] == 0 and self.live.get(ptr) == sid:
            del self.live[ptr]
            self.live_bytes -= self.sizes[sid]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        step = len(self.step_row)
        self.before.append(self.live_bytes)
        self.step_row.append(self._row_for(func))
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor):
                ptr = _ptr(t)
                if ptr in self.live:
                    self.last[self.live[ptr]] = step
                elif ptr and ptr not in self.resident:   # read, never allocated here: resident
                    self.resident[ptr] = t.untyped_storage().nbytes()
        with self.allocator.mark(step):
            out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                sid = self.adopt(t, step)
                if sid is not None:
                    self.last[sid] = step
        self.tracked.append(self.live_bytes)
        return out


def _hooks(model: nn.Module, trace: _Trace) -> list:
    names = {m: n for n, m in model.named_modules()}

    def pre(m, args, kwargs):
        trace.stack.append(names[m])
        trace.calls.append([trace.live[p] for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
                            and (p := _ptr(t)) in trace.live])
        if trace.leaf is None and _is_leaf(m):
            trace.leaf, trace.between = m, None
            trace.new_row(names[m] or type(m).__name__, type(m).__name__)

    def post(m, args, out):
        trace.stack.pop()
        for sid in trace.calls.pop():               # the caller held them until the call returned
            trace.held[sid] = max(trace.held[sid], len(trace.step_row) - 1)
        if trace.leaf is m:
            trace.leaf = None

    return [h for m in model.modules()
            for h in (m.register_forward_pre_hook(pre, with_kwargs=True), m.register_forward_hook(post))]


def _predicted(trace: _Trace, out_ids: set[int], steps: int, eager: bool) -> tuple[list[int], list[int]]:
    """Activation bytes alive at each step, and still alive after it. A storage lives from the
    step that allocates it to its last use (``eager``: or to the end of the last module call it
    was an argument of, if later); the input and the output live to the end."""
    delta, dying = [0] * (steps + 1), [0] * (steps + 1)
    for sid, nbytes in enumerate(trace.sizes):
        kept = trace.born[sid] < 0 or sid in out_ids
        end = steps - 1 if kept else max(trace.last[sid], trace.held[sid] if eager else -1)
        delta[max(trace.born[sid], 0)] += nbytes
        delta[end + 1] -= nbytes
        if not kept:
            dying[end] += nbytes
    at, total = [], 0
    for d in delta[:steps]:
        total += d
        at.append(total)
    return at, [a - d for a, d in zip(at, dying)]


def _result(trace: _Trace, model: nn.Module, shape: list[int], out_ids: set[int],
            allocated: list[int] | None) -> PeakMemory:
    steps = len(trace.step_row)
    resident = sum(trace.resident.values())
    input_bytes = sum(n for n, b in zip(trace.sizes, trace.born) if b < 0)
    at, after = _predicted(trace, out_ids, steps, eager=True)
    lower, _ = _predicted(trace, out_ids, steps, eager=False)
    tracked_after = trace.before[1:] + [trace.live_bytes]      # what the next step found, the end's
    by_row: dict[int, list[int]] = {}
    for step, row in enumerate(trace.step_row):
        by_row.setdefault(row, []).append(step)
    rows = []
    for i, row in enumerate(trace.rows):
        ss = by_row.get(i)
        if not ss:                                 # a layer that ran no op (an empty shortcut)
            continue
        row.steps = len(ss)
        row.predicted_peak_bytes = resident + max(at[s] for s in ss)
        row.predicted_live_bytes = after[ss[-1]]
        row.measured_peak_bytes = resident + max(trace.tracked[s] for s in ss)
        row.measured_live_bytes = tracked_after[ss[-1]]
        if allocated is not None:
            row.allocator_peak_bytes = resident + input_bytes + max(allocated[s] for s in ss)
        rows.append(row)
    return PeakMemory(
        input_shape=shape, weights_bytes=resident_bytes(model), resident_bytes=resident, input_bytes=input_bytes,
        output_bytes=sum(trace.sizes[s] for s in out_ids),
        predicted_peak_bytes=resident + max(at, default=input_bytes),
        predicted_last_use_peak_bytes=resident + max(lower, default=input_bytes),
        measured_peak_bytes=resident + max(trace.tracked, default=input_bytes),
        allocator_peak_bytes=resident + input_bytes + max(allocated, default=0) if allocated is not None else None,
        steps=steps, rows=rows)


@torch.no_grad()
def peak_memory(model: nn.Module, example_input: torch.Tensor | tuple) -> PeakMemory:
    """Run ``model`` once (eval, no grad) on ``example_input`` and return its peak memory,
    predicted and measured, in total and per layer (see the module docstring for each number)."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    # an input that is a view of a larger tensor (a batch sliced from a data set) is copied first:
    # the pass holds the input's bytes, not the whole storage it happens to share
    args = tuple(t.clone() if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > t.nbytes else t
                 for t in args)
    tensors = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
    devices = {t.device.type for t in tensors} | {t.device.type for t in model.parameters()}
    if devices - {"cpu"}:
        raise ConfigError(f"peak memory is measured on CPU; the model or input is on {sorted(devices - {'cpu'})}")
    was_training = model.training
    model.eval()
    allocator = AllocatorRecorder()
    trace = _Trace(model, allocator)
    handles = _hooks(model, trace)
    try:
        with allocator:
            for t in tensors:
                trace.adopt(t, -1)
            with trace:
                out = model(*args)
        out_ids = {trace.live[_ptr(t)] for t in tree_leaves(out)
                   if isinstance(t, torch.Tensor) and _ptr(t) in trace.live}
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for f in trace.finalizers:               # the tensors that outlive the pass: no callbacks
            f.detach()
    return _result(trace, model, list(tensors[0].shape) if tensors else [], out_ids,
                   allocator.per_step(len(trace.step_row)))
