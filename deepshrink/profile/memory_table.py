"""The result of :func:`deepshrink.profile.peak_memory.peak_memory`: peak inference memory in
total and per layer, as a table, a summary line or JSON. What each number is, in words, travels
with it (``MEMORY_MEANS``) so a reader of the JSON need not find this file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["MemoryRow", "PeakMemory", "MEMORY_MEANS"]

MEMORY_MEANS = {
    "resident_bytes": "the weights (parameters and buffers, in-memory dtype, each storage once) and any other "
                      "tensor the model reads but did not create; every peak below includes it",
    "predicted_peak_bytes": "resident + the most activation bytes (input included) alive at any aten op of the "
                            "forward, an activation alive from the op that allocates it to its last use or to the "
                            "end of the module call it is an argument of, if later (the caller holds it); views and "
                            "in-place ops allocate nothing; op-internal workspaces are not predicted",
    "predicted_last_use_peak_bytes": "as predicted, every activation freed at its last use (what a memory planner "
                                     "could reach; eager PyTorch holds module arguments longer)",
    "measured_peak_bytes": "resident + the peak bytes of the tensor storages (input included) still referenced "
                           "during the forward, tracked by weakref finalizers on every op's outputs: real frees, "
                           "no op-internal workspace",
    "allocator_peak_bytes": "resident + input + the peak of what the CPU allocator had handed out during the "
                            "forward, from its own allocation/free events: real frees and op workspaces "
                            "(e.g. oneDNN's blocked-layout convolution buffers)",
}


@dataclass
class MemoryRow:
    """One leaf layer call, or one run of ops between layers (``<module>.<op>``)."""
    name: str
    type: str
    steps: int = 0                          # aten ops run in it
    allocated_bytes: int = 0                # new storages its ops returned (views, in-place ops: none)
    predicted_peak_bytes: int = 0           # resident + the most alive at any of its ops (predicted)
    predicted_live_bytes: int = 0           # activations (input included) still alive after it (predicted)
    measured_peak_bytes: int = 0            # resident + tracked storages' peak within it
    measured_live_bytes: int = 0            # tracked storages (input included) still referenced after it
    allocator_peak_bytes: int | None = None  # resident + input + the allocator's peak within it


@dataclass
class PeakMemory:
    input_shape: list[int]
    weights_bytes: int
    resident_bytes: int
    input_bytes: int
    output_bytes: int
    predicted_peak_bytes: int
    predicted_last_use_peak_bytes: int
    measured_peak_bytes: int
    allocator_peak_bytes: int | None        # None: the allocator's events could not be recorded
    steps: int                              # aten ops in the forward
    rows: list[MemoryRow] = field(default_factory=list)

    @property
    def batch(self) -> int | None:
        return self.input_shape[0] if self.input_shape else None

    @property
    def ratio(self) -> float:
        """predicted / measured (live tensors)."""
        return self.predicted_peak_bytes / self.measured_peak_bytes if self.measured_peak_bytes else 1.0

    @property
    def allocator_ratio(self) -> float | None:
        """predicted / the allocator's peak; None without it."""
        return self.predicted_peak_bytes / self.allocator_peak_bytes if self.allocator_peak_bytes else None

    def peak_row(self, kind: str = "predicted") -> MemoryRow | None:
        """The row where the ``kind`` ("predicted", "measured", "allocator") peak is reached."""
        key = f"{kind}_peak_bytes"
        rows = [r for r in self.rows if getattr(r, key) is not None]
        return max(rows, key=lambda r: getattr(r, key)) if rows else None

    def to_dict(self) -> dict:
        keys = ("input_shape", "batch", "weights_bytes", "resident_bytes", "input_bytes", "output_bytes",
                "predicted_peak_bytes", "predicted_last_use_peak_bytes", "measured_peak_bytes",
                "allocator_peak_bytes", "steps")
        out = {k: getattr(self, k) for k in keys}
        out.update({"predicted_over_measured": self.ratio, "predicted_over_allocator": self.allocator_ratio,
                    "means": dict(MEMORY_MEANS), "rows": [asdict(r) for r in self.rows]})
        return out

    def summary(self) -> str:
        where = self.peak_row()
        allocator = (f"CPU allocator {self.allocator_peak_bytes:,} B with op workspaces "
                     f"(predicted/allocator {self.allocator_ratio:.3f})" if self.allocator_peak_bytes is not None
                     else "CPU allocator: not recorded")
        return (f"peak memory at batch {self.batch}: predicted {self.predicted_peak_bytes:,} B"
                f"{f' (at {where.name})' if where else ''}, measured {self.measured_peak_bytes:,} B "
                f"(live tensors; predicted/measured {self.ratio:.3f}), {allocator}; "
                f"weights {self.weights_bytes:,} B, input {self.input_bytes:,} B")

    def to_markdown(self) -> str:
        lines = ["| layer | type | ops | allocated | live after (pred.) | peak (pred.) | peak (measured) "
                 "| peak (allocator) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.type} | {r.steps} | {r.allocated_bytes:,} | {r.predicted_live_bytes:,} "
                         f"| {r.predicted_peak_bytes:,} | {r.measured_peak_bytes:,} | {_opt(r.allocator_peak_bytes)} |")
        lines.append(f"| **peak** | | {self.steps} | | | {self.predicted_peak_bytes:,} | {self.measured_peak_bytes:,} "
                     f"| {_opt(self.allocator_peak_bytes)} |")
        return "\n".join(lines)


def _opt(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
