"""``profile_model``: one row per executed leaf layer and per operation between layers, plus totals.

Leaf modules are measured with forward hooks and the counters of ``counts.py``. Every aten op
the forward pass runs is seen by a ``TorchDispatchMode`` (so any ``nn.Module`` can be profiled
without tracing) and costed by the rules of ``ops.py``:

* inside a leaf that has a counter, the counter covers its ops;
* inside a leaf without one (an ``Embedding``, a ``LayerNorm``, a model's own layer), its ops'
  costs are summed into its row;
* between leaves (a residual ``x + shortcut(x)``, the attention products of a transformer,
  a functional ``F.linear`` / ``F.conv2d``), each op that costs something gets its own row,
  ``<running module>.<kind>``, holding any parameter it reads that no row has counted yet.

An op with no rule is never a silent zero: it is counted in ``Profile.not_counted`` (the
"not counted: aten.xyz x N" footer) and the leaf it ran in is marked ``known=False``. A module
called twice gives two rows (``name#2``); each parameter tensor is counted once, in the row of
the first call that uses it (a repeat call or a tied weight shows 0 params).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .counts import LayerCost, count_layer, find_counter
from .ops import count_op, op_name
from .table import LayerRow, Profile, weight_bits

# LayerRow, Profile and weight_bits live in table.py; they stay importable from here
__all__ = ["LayerRow", "Profile", "profile_model", "weight_bits"]


def _shape(t) -> list[int]:
    if isinstance(t, torch.Tensor):
        return list(t.shape)
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return list(t[0].shape)
    return []


def _first_tensor(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (tuple, list)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    return b
    return None


@dataclass
class _Frame:
    """A leaf layer while it runs: its counter (None: sum its ops) and what its ops cost."""
    counter: Callable | None
    cost: LayerCost = field(default_factory=LayerCost)
    unknown: bool = False


class _Recorder(TorchDispatchMode):
    """Collects rows: costs every aten op run outside a leaf that has its own counter."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.rows: list[LayerRow] = []
        self.stack: list[str] = []              # names of the modules running now
        self.frames: list[_Frame] = []          # the leaf layers running now
        self.busy = False                       # the profiler's own ops (counting) are not the model's
        self.seen: dict[str, int] = {}
        self.params_seen: set[int] = set()     # ids of parameters already counted in a row
        self.wrapper: nn.Module | None = None  # the wrapper layer running now, if any
        self.not_counted: Counter[str] = Counter()
        self.owners: dict[int, list[tuple[nn.Parameter, nn.Module]]] = {}   # storage -> parameters
        for m in model.modules():
            for p in m.parameters(recurse=False):
                ptr = _storage(p)
                if ptr:
                    self.owners.setdefault(ptr, []).append((p, m))

    def unique(self, name: str) -> str:
        self.seen[name] = self.seen.get(name, 0) + 1
        return name if self.seen[name] == 1 else f"{name}#{self.seen[name]}"

    def _params_of(self, t) -> list[tuple[nn.Parameter, nn.Module]]:
        """The parameters whose storage ``t`` views (a weight read by an op), if any."""
        return self.owners.get(_storage(t), []) if isinstance(t, torch.Tensor) else []

    def is_weight(self, t) -> bool:
        return bool(self._params_of(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        frame = self.frames[-1] if self.frames else None
        if self.busy or (frame is not None and frame.counter is not None):
            return out
        try:
            found = count_op(func, args, kwargs, out, self.is_weight)
        except (IndexError, TypeError, ValueError, RuntimeError, AttributeError):
            found = None                          # arguments a rule does not expect: listed, not guessed
        if found is None:
            self.not_counted[op_name(func)] += 1
            if frame is not None:
                frame.unknown = True
            return out
        kind, cost = found
        if not kind:                              # free: views, creation, metadata
            return out
        if frame is not None:
            frame.cost = frame.cost + cost
            return out
        parent = self.stack[-1] if self.stack else ""
        used = [pm for t in _tensors(args) for pm in self._params_of(t)]
        self.rows.append(_row(self.unique(f"{parent}.{kind}" if parent else kind), kind,
                              _first_tensor(args), out, None, cost, True, self.params_seen, used))
        return out


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, ValueError):   # no storage: lazy, meta or a subclass
        return 0


def _tensors(args) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, (tuple, list)) else (a,)) if isinstance(t, torch.Tensor)]


def _param_counts(pairs, seen: set[int]) -> tuple[int, int, int]:
    """(params, nonzero, bits) of the (parameter, owning module) pairs not in ``seen``; marks them seen."""
    params = nonzero = bits = 0
    for p, module in pairs:
        if id(p) in seen:   # a module called again, or a weight shared with another layer
            continue
        seen.add(id(p))
        params += int(p.numel())
        nonzero += int(torch.count_nonzero(p))
        # the weight at the layer's bit width, other parameters as held
        bits += int(p.numel()) * (weight_bits(module) if p is getattr(module, "weight", None) else p.element_size() * 8)
    return params, nonzero, bits


def _own(module: nn.Module) -> list[tuple[nn.Parameter, nn.Module]]:
    return [(p, module) for p in module.parameters(recurse=False)]


def _row(name, type_name, x, y, module, cost: LayerCost, known: bool,
         seen: set[int] | None = None, used=()) -> LayerRow:
    """A layer's row (``module``: its own parameters) or an op's (``used``: the parameters it read)."""
    pairs = _own(module) if module is not None else list(used)
    owner = module if module is not None else (pairs[0][1] if pairs else None)
    wbits = weight_bits(owner) if owner is not None else 32
    params, nonzero, bits = _param_counts(pairs, set() if seen is None else seen)
    return LayerRow(
        name=name, type=type_name, input_shape=_shape(x), output_shape=_shape(y),
        params=params, nonzero_params=nonzero, weight_bits=wbits, bits=bits,
        macs=cost.macs, nonzero_macs=cost.nonzero_macs, multiplications=cost.multiplications,
        additions=cost.additions, memory_reads=cost.reads_per_op, memory_writes=cost.writes,
        min_memory_reads=cost.min_reads, known=known)


def _wrapped(m: nn.Module) -> nn.Module | None:
    """The layer a wrapper computes (e.g. a fake-quantized conv exposes ``profiled_layer``):
    the wrapper gets one row, counted as that layer, and nothing inside it gets a row."""
    inner = getattr(m, "profiled_layer", None)
    return inner if isinstance(inner, nn.Module) else None


def _is_leaf(m: nn.Module) -> bool:
    return not list(m.children()) or _wrapped(m) is not None


@torch.no_grad()
def profile_model(model: nn.Module, example_input: torch.Tensor | tuple) -> Profile:
    """Run ``model`` once in eval mode on ``example_input`` and count every layer's cost."""
    rec = _Recorder(model)
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(m, args):
        rec.stack.append(names[m])
        if rec.wrapper is not None:       # inside a wrapper layer: its own row covers this
            return
        if _is_leaf(m):
            inner = _wrapped(m)
            rec.frames.append(_Frame(find_counter(inner if inner is not None else m)))
            if inner is not None:
                rec.wrapper = m

    def post(m, args, out):
        rec.stack.pop()
        if (rec.wrapper is not None and rec.wrapper is not m) or not _is_leaf(m):
            return
        rec.wrapper = None
        frame = rec.frames.pop()
        rec.busy = True
        try:
            x = _first_tensor(args)
            inner = _wrapped(m)
            counted = inner if inner is not None else m
            # a layer without a counter costs what its ops cost
            cost, known = count_layer(counted, x, out) if frame.counter else (frame.cost, not frame.unknown)
            kind = type(m).__name__ + (f"({type(inner).__name__})" if inner is not None else "")
            rec.rows.append(_row(rec.unique(names[m] or type(m).__name__), kind,
                                 x, out, counted, cost, known, rec.params_seen))
        finally:
            rec.busy = False

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    was_training = model.training
    model.eval()
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with rec:
            model(*args)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    prof = Profile(rows=rec.rows, input_shape=_shape(args[0]), not_counted=dict(rec.not_counted))
    _add_unreached(model, prof, rec.params_seen)
    return prof


def _add_unreached(model: nn.Module, prof: Profile, seen: set[int]) -> None:
    """Parameters no executed leaf layer owns still take storage: one row.

    These are parameters of modules the forward pass never ran, and parameters held directly
    by a container module (which gets no row of its own) that no operation read.
    """
    params = nonzero = bits = 0
    for m in model.modules():
        p, nz, b = _param_counts(_own(m), seen)
        params, nonzero, bits = params + p, nonzero + nz, bits + b
    if params:
        prof.rows.append(LayerRow(name="(not run)", type="-", input_shape=[], output_shape=[],
                                  params=params, nonzero_params=nonzero, bits=bits))
