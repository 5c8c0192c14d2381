"""The ledger of a recipe run: one row per model file (the input, then each step's output) with
what it costs and how it does, and flags where a step's savings are on paper only.

Columns: parameters, nonzero parameters and MACs (:func:`deepshrink.profile.profile_model`),
the predicted peak inference memory at batch 1 (weights plus the live activations at each op:
:func:`deepshrink.profile.peak_memory.peak_memory`), the file's bytes, the test accuracy
(:func:`deepshrink.train.evaluate`; None on unlabelled data), and the latency at batch 1 measured
against the row before (:func:`deepshrink.profile.compare_latency`: interleaved, the median of
the per-pair ratios; ``speedup`` > 1: this row is faster).

Flags (:func:`flags`): ``zeros but nothing removed`` when the nonzero parameters fell but neither
the parameters nor the MACs did (zeros a dense kernel still multiplies), and ``MACs down, latency
flat`` when the MACs fell by more than :data:`MACS_DROP` but the measured speedup is under
:data:`FLAT_SPEEDUP`.

Measured times differ from run to run, so the ledger a file stores (:meth:`LedgerRow.stored`)
leaves them (and the flag that rests on them) out: a recipe replayed on the same input writes
the same bytes. The printed and ``--json`` ledgers have every column.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .data import Dataset
from .errors import DeepShrinkError
from .profile import compare_latency, measure_latency, profile_model
from .profile.peak_memory import peak_memory
from .train import evaluate

__all__ = ["LedgerRow", "measure_row", "time_against", "flags", "format_ledger", "ledger_cells", "ZEROS_FLAG",
           "FLAT_FLAG", "MACS_DROP", "FLAT_SPEEDUP", "TIMED_KEYS"]

ZEROS_FLAG = "zeros but nothing removed"
FLAT_FLAG = "MACs down, latency flat"
MACS_DROP = 0.10        # MACs fell by more than this fraction ...
FLAT_SPEEDUP = 1.05     # ... but the model is less than this much faster
TIMED_KEYS = ("latency_ms", "speedup")   # measured times: printed, never stored in the file


@dataclass
class LedgerRow:
    """One model file of the run: the input (``step`` "input") or one step's output."""

    step: str
    file_bytes: int
    params: int | None = None
    nonzero_params: int | None = None
    macs: int | None = None
    peak_memory_bytes: int | None = None    # predicted, batch 1
    accuracy: float | None = None           # test split, in [0, 1]
    latency_ms: float | None = None         # median at batch 1
    speedup: float | None = None            # the row before's time / this one's, interleaved (median)
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def stored(self) -> dict:
        """What the output file keeps: every column but the measured times (and their flag)."""
        d = {k: v for k, v in self.to_dict().items() if k not in TIMED_KEYS}
        d["flags"] = [f for f in self.flags if f != FLAT_FLAG]
        return d


def _quiet(fn, *args):
    """``fn(*args)``, or None when the model is one the counter cannot run (e.g. a traced graph)."""
    try:
        return fn(*args)
    except (DeepShrinkError, RuntimeError, NotImplementedError, TypeError):
        return None


def measure_row(step: str, path: str | os.PathLike, model: nn.Module, data: Dataset,
                progress: bool = False) -> LedgerRow:
    """Every column but the latency, for ``model`` loaded from ``path``."""
    x = data.test.x[:1]
    model.eval()
    prof = _quiet(profile_model, model, x)
    totals = prof.totals if prof is not None else {}
    mem = _quiet(peak_memory, model, x)
    acc = evaluate(model, data.test, progress=progress, desc=f"test accuracy, {step}") if data.labelled else None
    return LedgerRow(step, os.path.getsize(path), totals.get("params"), totals.get("nonzero_params"),
                     totals.get("macs"), mem.predicted_peak_bytes if mem is not None else None,
                     float(acc) if acc is not None else None)


def time_against(row: LedgerRow, model: nn.Module, before: nn.Module | None, x: torch.Tensor,
                 warmup: int = 3, repeats: int = 20) -> None:
    """Fill ``row``'s latency: alone for the first row, interleaved with ``before`` after it."""
    if before is None:
        row.latency_ms = measure_latency(model, x, warmup=warmup, repeats=repeats).median_ms
        return
    cmp = compare_latency(before, model, x, warmup=warmup, repeats=repeats)
    row.latency_ms, row.speedup = cmp.b.median_ms, cmp.ratio_median


def flags(row: LedgerRow, before: LedgerRow) -> list[str]:
    """The flags of ``row`` against the row before (see the module docstring)."""
    out = []
    fell = lambda a, b: a is not None and b is not None and a < b       # noqa: E731
    if fell(row.nonzero_params, before.nonzero_params) and not fell(row.params, before.params) \
            and not fell(row.macs, before.macs):
        out.append(ZEROS_FLAG)
    if (row.macs is not None and before.macs and row.macs < (1 - MACS_DROP) * before.macs
            and row.speedup is not None and row.speedup < FLAT_SPEEDUP):
        out.append(FLAT_FLAG)
    return out


def _n(v, fmt: str = ",") -> str:
    return "-" if v is None else format(v, fmt)


def ledger_cells(rows: list[LedgerRow]) -> tuple[list[str], list[list[str]]]:
    """The ledger's header and its rows as formatted cells (for the text table and the HTML page)."""
    head = ["step", "params", "nonzero", "MACs", "peak mem B", "file B", "accuracy", "latency ms", "speedup"]
    body = [[r.step, _n(r.params), _n(r.nonzero_params), _n(r.macs), _n(r.peak_memory_bytes), _n(r.file_bytes),
             "-" if r.accuracy is None else f"{r.accuracy * 100:.2f}%", _n(r.latency_ms, ".3f"),
             "-" if r.speedup is None else f"{r.speedup:.2f}x"] for r in rows]
    return head, body


def format_ledger(rows: list[LedgerRow]) -> str:
    """The ledger as a plain-text table, the flags below it."""
    head, body = ledger_cells(rows)
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)     # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(["-" * w for w in widths]), *map(line, body)]
    out += [f"flag: {r.step}: {f}" for r in rows for f in r.flags]
    return "\n".join(out)
