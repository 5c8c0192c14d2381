"""Sparse layouts of a pruned, quantized tensor: the paper's relative index, and CSR.

Relative index (Han, Mao & Dally 2016, Fig. 2): walk the flattened tensor and store, for each
nonzero, the number of zeros since the previous stored entry in ``b`` bits. A run of ``g`` zeros
longer than ``M = 2^b - 1`` is bridged by ``g // (M+1)`` *filler* entries (gap ``M``, value zero),
each covering ``M + 1`` positions, so a nonzero costs ``1 + g // (M+1)`` entries of ``b`` index
bits and one value code. ``b = 0`` is the dense layout (every position an entry). CSR instead
stores the nonzeros per row and each nonzero's column. Which one is cheaper depends on the
sparsity and on how clustered the zeros are, so the writer estimates every candidate
(``min(raw, n*H + table)`` per stream) and keeps the smallest (docs/FORMAT.md §4).

Value codes: relative layout ``0`` = zero/filler, ``i + 1`` = codebook entry ``i``; CSR ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from .entropy import estimate_bytes

__all__ = ["Layout", "MAX_INDEX_BITS", "SEARCH_BITS", "plain_relative_bits", "relative_layout", "csr_layout", "choose_layout",
           "relative_decode", "csr_decode", "csr_shape"]

MAX_INDEX_BITS = 16
SEARCH_BITS = range(0, 13)


@dataclass
class Layout:
    """One way to store a tensor: its name, index width and the symbol streams it needs."""

    name: str                                   # "relative" | "csr"
    index_bits: int | None                      # b for the relative layout
    entries: int                                # stored entries (nonzeros + fillers; CSR: nnz)
    streams: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)  # name -> (symbols, alphabet)

    def estimate(self) -> float:
        return sum(estimate_bytes(sym, alpha) for sym, alpha in self.streams.values())


def relative_layout(positions: np.ndarray, codes: np.ndarray, k: int, bits: int) -> Layout:
    """Entries of the relative layout: positions (nnz,) increasing, codes (nnz,) in [0, k)."""
    span = 1 << bits                                                # M + 1
    prev = np.concatenate([[-1], positions[:-1]])
    gaps = positions - prev - 1                                     # (nnz,) zeros before each
    fillers = gaps // span                                          # (nnz,)
    ends = np.cumsum(fillers + 1) - 1                               # entry index of each nonzero
    entries = int(ends[-1]) + 1 if ends.size else 0
    gap_stream = np.full(entries, span - 1, dtype=np.int64)         # fillers: gap M
    gap_stream[ends] = gaps - fillers * span
    code_stream = np.zeros(entries, dtype=np.int64)                 # fillers: code 0
    code_stream[ends] = codes + 1
    streams = {"codes": (code_stream, k + 1)}
    if bits:
        streams["index"] = (gap_stream, span)
    return Layout("relative", bits, entries, streams)


def plain_relative_bits(positions: np.ndarray, weight_bits: int) -> tuple[int, int]:
    """(b, bits) of the paper's fixed-width scheme at its best b in 1..12: every entry (nonzero
    or filler) costs ``weight_bits + b`` bits. The report's P+Q columns; not used for coding."""
    gaps = np.diff(positions, prepend=-1) - 1                       # (nnz,) zeros before each
    best = (1, positions.size * (weight_bits + 1) + int((gaps // 2).sum()) * (weight_bits + 1))
    for b in SEARCH_BITS[2:]:
        entries = positions.size + int((gaps >> b).sum())
        if entries * (weight_bits + b) < best[1]:
            best = (b, entries * (weight_bits + b))
    return best


def csr_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(R, Q): rows and columns of the CSR view of a tensor (first dim vs the rest)."""
    n = int(np.prod(shape, dtype=object)) if shape else 1
    rows = int(shape[0]) if shape else 1
    return rows, (n // rows if rows else 0)


def csr_layout(positions: np.ndarray, codes: np.ndarray, k: int, shape: tuple[int, ...]) -> Layout | None:
    """CSR streams, or None for an empty tensor."""
    rows, cols = csr_shape(shape)
    if rows * cols == 0:
        return None
    row_of = positions // cols
    per_row = np.bincount(row_of, minlength=rows)
    return Layout("csr", None, int(positions.size), {
        "rows": (per_row.astype(np.int64), cols + 1),
        "cols": (positions - row_of * cols, cols),
        "codes": (codes.astype(np.int64), max(k, 1)),
    })


def choose_layout(positions: np.ndarray, codes: np.ndarray, k: int, shape: tuple[int, ...]) -> Layout:
    """The candidate with the smallest estimated size (relative b = 0..12, CSR)."""
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    best, best_size = csr_layout(positions, codes, k, shape), float("inf")
    if best is not None:
        best_size = best.estimate()
    for b in SEARCH_BITS:                        # one candidate alive at a time: memory ~ 2 streams
        if b and (1 << (b - 1)) > numel:
            break
        cand = relative_layout(positions, codes, k, b)
        size = cand.estimate()
        if size < best_size:
            best, best_size = cand, size
    return best


def relative_decode(gaps: np.ndarray, codes: np.ndarray, numel: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions, codebook indices) of the nonzero entries; fillers dropped."""
    pos = np.cumsum(gaps + 1) - 1                                   # (entries,) position of each
    if pos.size and int(pos[-1]) >= numel:
        raise FormatError(f"{where}: relative indices run past the tensor "
                          f"(last entry at {int(pos[-1])}, tensor has {numel} elements)")
    keep = codes > 0
    return pos[keep], codes[keep] - 1


def csr_decode(per_row: np.ndarray, cols: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Flat positions of the nonzeros; columns must increase strictly within each row."""
    rows, ncols = csr_shape(shape)
    if int(per_row.sum()) != cols.size:
        raise FormatError(f"{where}: row counts sum to {int(per_row.sum())}, {cols.size} columns stored")
    row_of = np.repeat(np.arange(rows, dtype=np.int64), per_row)    # (nnz,)
    pos = row_of * ncols + cols
    if pos.size > 1 and not bool((np.diff(pos) > 0).all()):
        raise FormatError(f"{where}: CSR columns are not strictly increasing within a row")
    return pos
