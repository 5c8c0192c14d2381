"""Sparse layouts of a pruned, quantized tensor: the paper's relative index, and CSR.

Relative index (Han, Mao & Dally 2016, Fig. 2): walk the flattened tensor and store, for each
nonzero, the number of zeros since the previous stored entry in ``b`` bits. A run of ``g`` zeros
longer than ``M = 2^b - 1`` is bridged by ``g // (M+1)`` *filler* entries (gap ``M``, value zero),
each covering ``M + 1`` positions, so a nonzero costs ``1 + g // (M+1)`` entries of ``b`` index
bits and one value code. ``b = 0`` is the dense layout (every position an entry). CSR instead
stores the nonzeros per row and each nonzero's column. The bitmap layout (format version 3)
codes the nonzero pattern bit by bit, each bit with a probability learnt from the rows above
(:mod:`.adaptive`), and the codebook indices apart. Which one is cheaper depends on the
sparsity and on how clustered the zeros are, so the writer estimates every candidate
(``min(raw, n*H + table)`` per stream; the bitmap's pattern is coded to know its size) and keeps
the smallest (docs/FORMAT.md §4).

Value codes: relative layout ``0`` = zero/filler, ``i + 1`` = codebook entry ``i``; CSR and
bitmap ``i``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from .adaptive import MAX_ELEMENTS as BITMAP_MAX_ELEMENTS, MAX_ROWS as BITMAP_MAX_ROWS, adaptive_decode, adaptive_encode
from .entropy import estimate_bytes, estimate_from_counts

__all__ = ["Layout", "MAX_INDEX_BITS", "SEARCH_BITS", "DECODE_CHUNK", "plain_relative_bits", "relative_layout",
           "relative_estimate", "csr_layout", "bitmap_layout", "bitmap_fits", "choose_layout",
           "relative_chunks", "relative_decode", "csr_chunks", "csr_decode", "csr_shape", "bitmap_chunks",
           "BITMAP_MAX_ROWS", "BITMAP_MAX_ELEMENTS"]

MAX_INDEX_BITS = 16
SEARCH_BITS = range(0, 13)
DECODE_CHUNK = 1 << 17          # entries per decoding step: bounds the int64 temporaries to a few MiB


@dataclass
class Layout:
    """One way to store a tensor: its name, index width and the symbol streams it needs."""

    name: str                                   # "relative" | "csr" | "bitmap"
    index_bits: int | None                      # b for the relative layout
    entries: int                                # stored entries (nonzeros + fillers; CSR, bitmap: nnz)
    streams: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)  # name -> (symbols, alphabet)
    coded: dict[str, tuple[str, bytes, int, int]] = field(default_factory=dict)  # name -> (coder, payload,
    #                                                             count, alphabet): sections coded already

    def estimate(self) -> float:
        return (sum(len(c[1]) for c in self.coded.values())
                + sum(estimate_bytes(sym, alpha) for sym, alpha in self.streams.values()))


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


def bitmap_fits(shape: tuple[int, ...]) -> bool:
    """Whether the bitmap layout may hold a tensor of this shape (1 <= n <= 2^40, R <= 2^16)."""
    rows, cols = csr_shape(shape)
    return 0 < rows * cols <= BITMAP_MAX_ELEMENTS and rows <= BITMAP_MAX_ROWS


def bitmap_layout(positions: np.ndarray, codes: np.ndarray, k: int, shape: tuple[int, ...]) -> Layout | None:
    """The bitmap layout (its pattern coded), or None where it does not apply (see ``bitmap_fits``)."""
    if not bitmap_fits(shape):
        return None
    rows, cols = csr_shape(shape)
    return Layout("bitmap", None, int(positions.size), {"codes": (codes.astype(np.int64), max(k, 1))},
                  {"mask": ("adaptive", adaptive_encode(positions, rows, cols), rows * cols, 2)})


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


def choose_layout(positions: np.ndarray, codes: np.ndarray, k: int, shape: tuple[int, ...],
                  bitmap: bool = True) -> Layout:
    """The candidate with the smallest estimated size (relative b = 0..12, CSR, and with
    ``bitmap`` the bitmap layout when ``0 < nnz < n``; ties keep that order).

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
    best: Layout | None = None
    csr = csr_layout(positions, codes, k, shape)
    if csr is not None and csr.estimate() < best_size:
        best, best_size = csr, csr.estimate()
    if bitmap and 0 < positions.size < numel:
        bmp = bitmap_layout(positions, codes, k, shape)
        if bmp is not None and bmp.estimate() < best_size:
            best = bmp
    return best if best is not None else relative_layout(positions, codes, k, best_b)


def relative_chunks(gaps: np.ndarray | None, codes: np.ndarray, numel: int,
                    where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, codebook indices) of the nonzero entries, fillers dropped, one chunk of
    entries at a time; ``gaps`` None is ``b = 0`` (every gap 0). An entry past the tensor is
    refused before its chunk is yielded (positions only grow, so each chunk's last is checked)."""
    cursor = 0                                                      # position of an entry with gap 0
    for start in range(0, codes.size, DECODE_CHUNK):
        code = codes[start:start + DECODE_CHUNK]                    # (chunk,) narrow ints
        if gaps is None:
            pos = np.arange(cursor, cursor + code.size, dtype=np.int64)
        else:
            pos = np.cumsum(gaps[start:start + DECODE_CHUNK], dtype=np.int64)   # (chunk,)
            pos += np.arange(cursor, cursor + code.size, dtype=np.int64)        # + one per entry
        if int(pos[-1]) >= numel:
            raise FormatError(f"{where}: relative indices run past the tensor "
                              f"(last entry at {int(pos[-1])}, tensor has {numel} elements)")
        cursor = int(pos[-1]) + 1
        keep = code > 0
        yield pos[keep], code[keep] - 1


def relative_decode(gaps: np.ndarray, codes: np.ndarray, numel: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions, codebook indices) of all the nonzero entries; fillers dropped."""
    parts = list(relative_chunks(gaps, codes, numel, where))
    if not parts:
        return np.zeros(0, dtype=np.int64), codes[:0]
    return np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])


def csr_chunks(per_row: np.ndarray, cols: np.ndarray, codes: np.ndarray, shape: tuple[int, ...],
               where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(flat positions, codebook indices) of the nonzeros, one chunk at a time; columns must
    increase strictly within each row. Holds one (R,) int64 array of row ends besides the chunk."""
    rows, ncols = csr_shape(shape)
    total = int(per_row.sum(dtype=np.int64))
    if total != cols.size:
        raise FormatError(f"{where}: row counts sum to {total}, {cols.size} columns stored")
    ends = np.cumsum(per_row, dtype=np.int64)                       # (R,) one past each row's last
    last = -1
    for start in range(0, cols.size, DECODE_CHUNK):
        stop = min(cols.size, start + DECODE_CHUNK)
        row_of = np.searchsorted(ends, np.arange(start, stop, dtype=np.int64), side="right")   # (chunk,)
        pos = row_of * ncols + cols[start:stop]
        if int(pos[0]) <= last or not bool((np.diff(pos) > 0).all()):
            raise FormatError(f"{where}: CSR columns are not strictly increasing within a row")
        last = int(pos[-1])
        yield pos, codes[start:stop]


def csr_decode(per_row: np.ndarray, cols: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Flat positions of all the nonzeros; columns must increase strictly within each row."""
    parts = [pos for pos, _ in csr_chunks(per_row, cols, cols, shape, where)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def bitmap_chunks(mask: bytes, codes: np.ndarray, shape: tuple[int, ...], nnz: int,
                  where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(flat positions, codebook indices) of the nonzeros of a bitmap layout, one step of a row at
    a time (:func:`.adaptive.adaptive_decode`); ``codes`` holds ``nnz`` indices in row-major order."""
    rows, cols = csr_shape(shape)
    for pos, before in adaptive_decode(mask, rows, cols, nnz, where):
        yield pos, codes[before:before + pos.size]
