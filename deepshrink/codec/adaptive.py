"""The ``adaptive`` coder of the bitmap layout: the nonzero pattern, column-adaptive (docs/FORMAT.md §4).

A pruned layer viewed as ``R x Q`` (output units x inputs) often has columns of very different
densities: an input pixel or channel that matters little is pruned in almost every row. The
relative index codes each row's gaps with one histogram and so pays for that pattern again in
every row. This coder codes the bitmap ``x[i, j]`` row by row, each bit with its own probability
of a 1, estimated from the rows above: column ``j``'s count ``c`` so far, shrunk toward the whole
tensor's density so far with the weight of ``s = 8`` rows (a Krichevsky-Trofimov-like estimate
that does not overreact in the first rows)::

    p = (2 c (i Q + 1) + 2 s G + s) / (2 (i + s) (i Q + 1))

computed from exact integers with one float64 division, so writer and reader agree bit for bit.
The bits go through constriction's rANS coder with its Bernoulli model, one probability per
bit; a row's probabilities depend only on earlier rows, so the decoder draws a whole row (in
steps of at most ``CHUNK`` columns) per call. It holds the ``(Q,)`` column counts and one step's
temporaries, never the bitmap.
"""

from __future__ import annotations

from collections.abc import Iterator

import constriction
import numpy as np

from ..errors import FormatError

AnsCoder = constriction.stream.stack.AnsCoder
Bernoulli = constriction.stream.model.Bernoulli      # native submodule: attribute access only

__all__ = ["STRENGTH", "MAX_ROWS", "MAX_ELEMENTS", "CHUNK", "probabilities", "adaptive_encode", "adaptive_decode"]

STRENGTH = 8                    # s: the prior's weight, in rows
MAX_ROWS = 1 << 16              # R: the decoder takes one step per row
MAX_ELEMENTS = 1 << 40          # n: keeps every numerator and denominator below 2^58 (int64)
CHUNK = 1 << 17                 # columns per decoding step; ~ rows x columns per encoding block


def probabilities(counts: np.ndarray, ones: np.ndarray | int, row: np.ndarray | int, cols: int) -> np.ndarray:
    """P(bit = 1) for bits whose column holds ``counts`` ones in the rows above, in a row (number
    ``row``) below ``ones`` ones in all; arrays broadcast (a block of rows: ``counts`` (B, Q),
    ``ones`` and ``row`` (B, 1)). Exact int64 numerator and denominator, one float64 division."""
    base = np.asarray(row, dtype=np.int64) * cols + 1
    num = 2 * np.asarray(counts, dtype=np.int64) * base + (2 * STRENGTH * np.asarray(ones, dtype=np.int64) + STRENGTH)
    den = 2 * (np.asarray(row, dtype=np.int64) + STRENGTH) * base
    return num.astype(np.float64) / den.astype(np.float64)


def _model():
    return Bernoulli(perfect=False)


def adaptive_encode(positions: np.ndarray, rows: int, cols: int) -> bytes:
    """The coder's payload for the bitmap of ``positions`` (increasing flat positions) in an
    ``rows x cols`` tensor: blocks of rows from the last to the first (ANS is a stack), each
    block's probabilities from the column counts at its first row."""
    positions = np.asarray(positions, dtype=np.int64)
    col_of = positions % cols
    counts = np.bincount(col_of, minlength=cols).astype(np.int64)      # (Q,) ones in rows < stop
    ones = int(positions.size)                                         # ones in rows < stop
    step = max(1, CHUNK // max(cols, 1))                               # rows per block
    coder, model = AnsCoder(), _model()
    for start in reversed(range(0, rows, step)):                       # blocks, not bits
        stop = min(rows, start + step)
        lo, hi = np.searchsorted(positions, [start * cols, stop * cols])
        block = np.zeros((stop - start, cols), dtype=np.int64)         # (B, Q) this block's bits
        block.reshape(-1)[positions[lo:hi] - start * cols] = 1
        counts -= block.sum(axis=0)                                    # now: ones in rows < start
        ones -= int(hi - lo)
        above = counts + np.cumsum(block, axis=0) - block              # (B, Q) ones in rows above
        per_row = block.sum(axis=1)                                    # (B,)
        before = ones + np.cumsum(per_row) - per_row                   # (B,) ones in all rows above
        row = np.arange(start, stop, dtype=np.int64)[:, None]
        p = probabilities(above, before[:, None], row, cols)
        coder.encode_reverse(block.reshape(-1).astype(np.int32), model, p.reshape(-1))
    return coder.get_compressed().astype("<u4").tobytes()


def adaptive_decode(payload: bytes, rows: int, cols: int, nnz: int, where: str) -> Iterator[tuple[np.ndarray, int]]:
    """(flat positions of the ones, ones before them) one step of a row at a time; the ones in
    the whole bitmap must be exactly ``nnz`` (more are refused as soon as they appear) and the
    coder must end empty."""
    if len(payload) % 4 or not payload:
        raise FormatError(f"{where}: adaptive stream is {len(payload)} bytes, not a positive multiple of 4")
    try:
        coder = AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise FormatError(f"{where}: corrupt adaptive stream ({exc})") from None
    model = _model()
    counts = np.zeros(cols, dtype=np.int64)                            # (Q,) ones per column so far
    ones = 0                                                           # ones in the rows above
    for row in range(rows):                                            # rows (at most MAX_ROWS)
        found = 0
        for start in range(0, cols, CHUNK):                            # steps of a row
            stop = min(cols, start + CHUNK)
            p = probabilities(counts[start:stop], ones, row, cols)
            try:
                bits = coder.decode(model, p)                          # (step,) int32
            except (ValueError, RuntimeError, OverflowError, IndexError) as exc:
                raise FormatError(f"{where}: corrupt adaptive stream ({exc})") from None
            hit = np.flatnonzero(bits)
            if ones + found + hit.size > nnz:
                raise FormatError(f"{where}: the bitmap holds more than the {nnz} nonzeros the header declares")
            if hit.size:
                counts[start + hit] += 1                               # columns of this step only
                yield row * cols + start + hit, ones + found
                found += hit.size
        ones += found
    if ones != nnz:
        raise FormatError(f"{where}: the bitmap holds {ones} nonzeros, the header declares {nnz}")
    try:
        done = coder.is_empty()
    except (ValueError, RuntimeError) as exc:                          # pragma: no cover
        raise FormatError(f"{where}: corrupt adaptive stream ({exc})") from None
    if not done:
        raise FormatError(f"{where}: adaptive stream has data left after {rows * cols} bits")
