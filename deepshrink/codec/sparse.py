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
from .entropy import estimate_bytes, estimate_from_counts

__all__ = ["Layout", "MAX_INDEX_BITS", "SEARCH_BITS", "plain_relative_bits", "relative_layout", "relative_estimate",
           "csr_layout", "choose_layout",
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
    code_stream = np.zeros(entries, dtype=np.int64)                 # fillers: code 0
    code_stream[ends] = codes + 1
    streams = {"codes": (code_stream, k + 1)}
    if bits:
        gap_stream = np.full(entries, span - 1, dtype=np.int64)     # fillers: gap M
        gap_stream[ends] = gaps - fillers * span
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


def relative_estimate(gap_values: np.ndarray, gap_counts: np.ndarray, code_counts: np.ndarray, bits: int) -> float:
    """Estimated bytes of the relative layout at width ``bits``, from histograms alone.

    gap_values/gap_counts: the distinct numbers of zeros before a nonzero and how often each
    occurs; code_counts: (K,) histogram of the codebook indices. Fillers add ``g // 2^b`` zero
    codes and gaps of ``M`` per nonzero; the gap left is ``g mod 2^b``.
    """
    span = 1 << bits
    fillers = int((gap_counts * (gap_values >> bits)).sum())
    est = estimate_from_counts(np.concatenate([[fillers], code_counts]), code_counts.size + 1)
    if bits:
        gap_hist = np.bincount(gap_values & (span - 1), weights=gap_counts, minlength=span)
        gap_hist[span - 1] += fillers
        est += estimate_from_counts(gap_hist, span)
    return est


def choose_layout(positions: np.ndarray, codes: np.ndarray, k: int, shape: tuple[int, ...]) -> Layout:
    """The candidate with the smallest estimated size (relative b = 0..12, CSR).

    Relative widths are compared on histograms (no stream is built); only the winner is built.
    """
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    gap_values, gap_counts = np.unique(np.diff(positions, prepend=-1) - 1, return_counts=True)
    code_counts = np.bincount(codes, minlength=k)
    best_b, best_size = 0, relative_estimate(gap_values, gap_counts, code_counts, 0)
    for b in SEARCH_BITS[1:]:
        if (1 << (b - 1)) > numel:
            break
        size = relative_estimate(gap_values, gap_counts, code_counts, b)
        if size < best_size:
            best_b, best_size = b, size
    csr = csr_layout(positions, codes, k, shape)
    if csr is not None and csr.estimate() < best_size:
        return csr
    return relative_layout(positions, codes, k, best_b)


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
