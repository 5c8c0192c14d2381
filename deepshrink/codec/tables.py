"""Compact tables of small integers for the entropy coders' headers (docs/FORMAT.md §3.1).

A coder's table is one non-negative integer per symbol of the alphabet (a Huffman code length,
an ANS weight), most of them close to their neighbour: code lengths and weights vary smoothly
with the symbol value when the symbols are sorted codebook entries or gap lengths. So the table
stores the differences ``d_s = v_s - v_{s-1}`` (``v_{-1} = 0``), zigzag-mapped to
``x = 2d`` (d >= 0) or ``-2d - 1`` (d < 0), each written with an Exp-Golomb code of order ``k``
(Teuhola 1978): ``x`` falls in group ``g`` when ``2^k (2^g - 1) <= x < 2^k (2^(g+1) - 1)`` and
costs ``k + 1 + 2g`` bits. The code is used in its *canonical* form (codes of one length are
consecutive, shorter codes first, as in DEFLATE), so bitarray's C decoder reads it; ``k`` and the
largest group ``G`` are stored in 4 + 5 bits ahead of the codes. A table of ``A`` entries whose
neighbours differ by 0 or 1 costs ~1-3 bits per entry instead of a byte or a varint.

The bit stream is MSB first and padded with zero bits to a whole byte.
"""

from __future__ import annotations

import itertools

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode

from ..errors import FormatError

__all__ = ["HEAD_BITS", "table_bits", "encode_table", "decode_table"]

HEAD_BITS = 9                   # k: 4 bits, G: 5 bits
MAX_LENGTH = 31                 # bitarray's canonical_decode limit
MAX_SPAN = 1 << 18              # largest zigzag value + 1 a table may declare (bounds the decoder)


def _zigzag(values: np.ndarray) -> np.ndarray:
    d = np.diff(np.asarray(values, dtype=np.int64), prepend=0)        # (A,)
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def _groups(x: np.ndarray, k: int) -> np.ndarray:
    """Exp-Golomb group of each zigzag value: bitlen(x + 2^k) - k - 1 (exact: frexp)."""
    return np.frexp((x + (1 << k)).astype(np.float64))[1].astype(np.int64) - k - 1


def _feasible(k: int, top: int) -> bool:
    return k < 16 and top < 32 and k + 1 + 2 * top <= MAX_LENGTH and (1 << k) * ((2 << top) - 1) <= MAX_SPAN


def _best_order(x: np.ndarray) -> tuple[int, int, int]:
    """(bits, k, G) of the cheapest feasible order for these zigzag values (all 16 orders at once)."""
    orders = np.arange(16)
    g = np.frexp((x[None, :] + (1 << orders)[:, None]).astype(np.float64))[1] - orders[:, None] - 1  # (16, A)
    tops = g.max(axis=1, initial=0)                                      # (16,)
    bits = HEAD_BITS + (orders + 1) * x.size + 2 * g.sum(axis=1)        # (16,)
    ok = [_feasible(k, int(tops[k])) for k in orders]                    # orders, not symbols
    if not any(ok):
        raise ValueError("table values differ too much to be coded")
    k = int(np.argmin(np.where(ok, bits, np.iinfo(np.int64).max)))
    return int(bits[k]), k, int(tops[k])


def table_bits(values: np.ndarray) -> int:
    """Bits of :func:`encode_table` before the padding to a byte."""
    return _best_order(_zigzag(values))[0]


def _counts(k: int, top: int) -> list[int]:
    count = [0] * (k + 2 + 2 * top)
    for g in range(top + 1):                                           # groups, not symbols
        count[k + 1 + 2 * g] = 1 << (k + g)
    return count


def encode_table(values: np.ndarray) -> bytes:
    """(A,) non-negative ints -> the table's bytes (header, canonical codes, zero padding)."""
    x = _zigzag(values)
    _, k, top = _best_order(x)
    g = _groups(x, k)                                                  # (A,)
    lengths = k + 1 + 2 * g
    count = _counts(k, top)
    code, start = 0, 0                                                 # canonical first code per group
    first_of = np.zeros(top + 1, dtype=np.int64)
    start_of = np.zeros(top + 1, dtype=np.int64)
    for length in range(1, len(count)):                                # lengths, not symbols
        if count[length]:
            gi = (length - k - 1) // 2
            first_of[gi], start_of[gi] = code, start
            start += count[length]
        code = (code + count[length]) << 1
    codes = (first_of[g] + x - start_of[g]).astype(np.uint64)          # (A,)
    head = np.array([k >> 3 & 1, k >> 2 & 1, k >> 1 & 1, k & 1] + [top >> i & 1 for i in range(4, -1, -1)],
                    dtype=np.uint8)
    width = int(lengths.max(initial=1))
    shifts = lengths[:, None] - 1 - np.arange(width)[None, :]          # (A, width)
    keep = shifts >= 0
    bits = ((codes[:, None] >> np.maximum(shifts, 0).astype(np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(np.concatenate([head, bits[keep]])).tobytes()


def decode_table(payload: bytes, count: int, vmax: int, where: str) -> tuple[np.ndarray, int]:
    """The ``count`` values of a table at the start of ``payload`` (each checked to lie in
    [0, vmax]) and the number of bytes the table takes; FormatError on any inconsistency."""
    limit = (HEAD_BITS + MAX_LENGTH * count + 7) // 8
    stream = bitarray(endian="big")
    stream.frombytes(payload[:limit])
    if len(stream) < HEAD_BITS:
        raise FormatError(f"{where}: table header needs {HEAD_BITS} bits, the payload has {len(stream)}")
    k, top = int(stream[:4].to01(), 2), int(stream[4:HEAD_BITS].to01(), 2)
    if not _feasible(k, top):
        raise FormatError(f"{where}: table declares Exp-Golomb order {k} with {top + 1} groups (codes over "
                          f"{MAX_LENGTH} bits or values over {MAX_SPAN})")
    span = (1 << k) * ((2 << top) - 1)
    try:
        decoded = itertools.islice(canonical_decode(stream[HEAD_BITS:], _counts(k, top), range(span)), count)
        x = np.fromiter(decoded, dtype=np.int64, count=count)
    except ValueError as exc:  # stream too short, or an unassigned code
        raise FormatError(f"{where}: corrupt table ({exc})") from None
    nbits = HEAD_BITS + int((k + 1 + 2 * _groups(x, k)).sum())
    nbytes = (nbits + 7) // 8
    if stream[nbits:8 * nbytes].any():
        raise FormatError(f"{where}: table has nonzero padding bits")
    values = np.cumsum(np.where(x % 2 == 0, x // 2, -(x + 1) // 2))   # (count,) |partial sums| < 2^35
    if values.size and (int(values.min()) < 0 or int(values.max()) > vmax):
        raise FormatError(f"{where}: table value outside [0, {vmax}]")
    return values, nbytes
