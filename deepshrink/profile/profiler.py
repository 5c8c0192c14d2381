"""``profile_model``: one row per executed leaf layer and per tensor add, plus totals.

Leaf modules are measured with forward hooks; arithmetic done between modules (the
``x + shortcut(x)`` of a residual block, concatenations) is caught with a
``TorchFunctionMode`` while no leaf is running, so any ``nn.Module`` can be profiled without
tracing. A module called twice gives two rows (``name#2``); each parameter tensor is counted
once, in the row of the first call that uses it (a repeat call or a tied weight shows 0 params).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..names import BITS_SUFFIX
from .counts import LayerCost, count_elementwise, count_layer

__all__ = ["LayerRow", "Profile", "profile_model", "weight_bits"]

_ADDS = {torch.add, torch.sub, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.__add__,
         torch.Tensor.__radd__, torch.Tensor.__iadd__, torch.Tensor.__sub__, torch.Tensor.add_}
_MULS = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_}
_CATS = {torch.cat, torch.concat, torch.stack}


@dataclass
class LayerRow:
    name: str
    type: str
    input_shape: list[int]
    output_shape: list[int]
    params: int = 0
    nonzero_params: int = 0
    weight_bits: int = 32
    bits: int = 0                  # parameter storage as held: params * bits per value
    macs: int = 0
    nonzero_macs: int = 0
    multiplications: int = 0
    additions: int = 0
    memory_reads: int = 0          # per operation: every operand read counts once
    memory_writes: int = 0
    min_memory_reads: int = 0      # minimal traffic: each input and parameter read once
    known: bool = True             # False: no counter for this layer type (costs left at 0)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0


def weight_bits(module: nn.Module) -> int:
    """Bits per stored weight: a quantized layer's ``weight_bits``, else the dtype's width."""
    bits = getattr(module, "weight" + BITS_SUFFIX, None)
    if bits is not None:
        return int(bits)
    w = getattr(module, "weight", None)
    return int(w.element_size() * 8) if isinstance(w, torch.Tensor) else 32


TOTAL_KEYS = ("params", "nonzero_params", "bits", "macs", "nonzero_macs", "multiplications",
              "additions", "memory_reads", "memory_writes", "min_memory_reads")


@dataclass
class Profile:
    rows: list[LayerRow] = field(default_factory=list)
    input_shape: list[int] = field(default_factory=list)

    @property
    def totals(self) -> dict:
        t = {k: sum(getattr(r, k) for r in self.rows) for k in TOTAL_KEYS}
        t["memory_accesses"] = t["memory_reads"] + t["memory_writes"]
        t["min_memory_accesses"] = t["min_memory_reads"] + t["memory_writes"]
        t["bytes"] = (t["bits"] + 7) // 8
        t["sparsity"] = 1.0 - t["nonzero_params"] / t["params"] if t["params"] else 0.0
        return t

    def to_dict(self) -> dict:
        rows = [{**asdict(r), "sparsity": r.sparsity} for r in self.rows]
        return {"input_shape": self.input_shape, "rows": rows, "totals": self.totals}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        t = self.totals
        return (f"params {t['params']:,} (nonzero {t['nonzero_params']:,}, sparsity {t['sparsity'] * 100:.1f}%)"
                f"  MACs {t['macs']:,}  memory accesses {t['memory_accesses']:,}  size {t['bytes']:,} B")

    def to_markdown(self) -> str:
        head = ("| layer | type | output | params | sparsity | bits | MACs | nonzero MACs | adds | mults "
                "| mem (per op) | mem (min) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        lines = [head]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {r.type}{'' if r.known else ' (?)'} | {'x'.join(map(str, r.output_shape))} "
                f"| {r.params:,} | {r.sparsity * 100:.1f}% | {r.weight_bits if r.params else '-'} "
                f"| {r.macs:,} | {r.nonzero_macs:,} | {r.additions:,} | {r.multiplications:,} "
                f"| {r.memory_reads + r.memory_writes:,} | {r.min_memory_reads + r.memory_writes:,} |")
        t = self.totals
        lines.append(
            f"| **total** | | | {t['params']:,} | {t['sparsity'] * 100:.1f}% | | {t['macs']:,} "
            f"| {t['nonzero_macs']:,} | {t['additions']:,} | {t['multiplications']:,} "
            f"| {t['memory_accesses']:,} | {t['min_memory_accesses']:,} |")
        return "\n".join(lines)


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


class _Recorder(TorchFunctionMode):
    """Collects rows; counts tensor arithmetic only while no leaf module is running."""

    def __init__(self):
        super().__init__()
        self.rows: list[LayerRow] = []
        self.stack: list[str] = []
        self.in_leaf = 0
        self.busy = False
        self.seen: dict[str, int] = {}
        self.params_seen: set[int] = set()   # ids of parameters already counted in a row
        self.wrapper: nn.Module | None = None  # the wrapper layer running now, if any

    def unique(self, name: str) -> str:
        self.seen[name] = self.seen.get(name, 0) + 1
        return name if self.seen[name] == 1 else f"{name}#{self.seen[name]}"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.in_leaf or self.busy:
            return out
        kind = "add" if func in _ADDS else "mul" if func in _MULS else "cat" if func in _CATS else None
        if kind is None or not isinstance(out, torch.Tensor):
            return out
        self.busy = True
        try:
            tensors = [a for a in (args[0] if kind == "cat" else args) if isinstance(a, torch.Tensor)]
            n_in = sum(int(t.numel()) for t in tensors)
            n_out = int(out.numel())
            if kind == "cat":
                cost = count_elementwise(n_in, n_out, operands=1, arith=0)
            else:
                cost = count_elementwise(n_in, n_out, operands=2, arith=1)
                if kind == "mul":
                    cost.multiplications, cost.additions = cost.additions, 0
            parent = self.stack[-1] if self.stack else ""
            name = self.unique(f"{parent}.{kind}" if parent else kind)
            self.rows.append(_row(name, kind, _first_tensor(tensors and [tensors[0]]), out, None, cost, True))
        finally:
            self.busy = False
        return out


def _param_counts(module: nn.Module, seen: set[int]) -> tuple[int, int, int]:
    """(params, nonzero, bits) of the module's own parameters not in ``seen``; marks them seen."""
    params = nonzero = bits = 0
    wbits = weight_bits(module)
    w = getattr(module, "weight", None)
    for p in module.parameters(recurse=False):
        if id(p) in seen:   # a module called again, or a weight shared with another layer
            continue
        seen.add(id(p))
        params += int(p.numel())
        nonzero += int(torch.count_nonzero(p))
        # the weight at the layer's bit width, other parameters as held
        bits += int(p.numel()) * (wbits if p is w else p.element_size() * 8)
    return params, nonzero, bits


def _row(name, type_name, x, y, module, cost: LayerCost, known: bool,
         seen: set[int] | None = None) -> LayerRow:
    params = nonzero = bits = 0
    wbits = 32
    if module is not None:
        wbits = weight_bits(module)
        params, nonzero, bits = _param_counts(module, set() if seen is None else seen)
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
    rec = _Recorder()
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(m, args):
        rec.stack.append(names[m])
        if rec.wrapper is not None:       # inside a wrapper layer: its own row covers this
            return
        if _is_leaf(m):
            rec.in_leaf += 1
            if _wrapped(m) is not None:
                rec.wrapper = m

    def post(m, args, out):
        rec.stack.pop()
        if (rec.wrapper is not None and rec.wrapper is not m) or not _is_leaf(m):
            return
        rec.wrapper = None
        rec.in_leaf -= 1
        rec.busy = True
        try:
            x = _first_tensor(args)
            inner = _wrapped(m)
            counted = inner if inner is not None else m
            cost, known = count_layer(counted, x, out)
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
    prof = Profile(rows=rec.rows, input_shape=_shape(args[0]))
    _add_unreached(model, prof, rec.params_seen)
    return prof


def _add_unreached(model: nn.Module, prof: Profile, seen: set[int]) -> None:
    """Parameters no executed leaf layer owns still take storage: one row.

    These are parameters of modules the forward pass never ran, and parameters held directly
    by a container module (which gets no row of its own).
    """
    params = nonzero = bits = 0
    for m in model.modules():
        p, nz, b = _param_counts(m, seen)
        params, nonzero, bits = params + p, nonzero + nz, bits + b
    if params:
        prof.rows.append(LayerRow(name="(not run)", type="-", input_shape=[], output_shape=[],
                                  params=params, nonzero_params=nonzero, bits=bits))
