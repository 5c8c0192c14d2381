"""The result of ``profile_model``: one :class:`LayerRow` per counted layer or operation, totals,
and the operations no rule counts ("not counted: aten.xyz x N"), as a table, markdown or JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..names import BITS_SUFFIX

__all__ = ["LayerRow", "Profile", "weight_bits", "TOTAL_KEYS", "MODEL_BYTES_MEANS"]


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
    known: bool = True             # False: an operation in it has no cost rule (see Profile.not_counted)

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


# what ``totals["bytes"]`` is ("model size"): not a file's size, which adds headers, indices, masks
MODEL_BYTES_MEANS = "the parameters, dense, each weight at its bit width"

TOTAL_KEYS = ("params", "nonzero_params", "bits", "macs", "nonzero_macs", "multiplications",
              "additions", "memory_reads", "memory_writes", "min_memory_reads")


@dataclass
class Profile:
    rows: list[LayerRow] = field(default_factory=list)
    input_shape: list[int] = field(default_factory=list)
    not_counted: dict[str, int] = field(default_factory=dict)   # op name -> calls no rule counts

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
        return {"input_shape": self.input_shape, "rows": rows, "totals": self.totals,
                "not_counted": dict(self.not_counted)}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        t = self.totals
        return (f"params {t['params']:,} (nonzero {t['nonzero_params']:,}, sparsity {t['sparsity'] * 100:.1f}%)"
                f"  MACs {t['macs']:,}  memory accesses {t['memory_accesses']:,}"
                f"  model size {t['bytes']:,} B ({MODEL_BYTES_MEANS})")

    def footer(self) -> str:
        """``not counted: aten.xyz x N, ...`` (most calls first), or "" when every op was counted."""
        if not self.not_counted:
            return ""
        ops = sorted(self.not_counted.items(), key=lambda kv: (-kv[1], kv[0]))
        return "not counted: " + ", ".join(f"{name} x {n}" for name, n in ops)

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
        if self.not_counted:
            lines += ["", self.footer()]
        return "\n".join(lines)
