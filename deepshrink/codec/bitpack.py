"""Fixed-width bit packing and LEB128 varints, vectorised with numpy.

The ``raw`` coder of the .dsz format (docs/FORMAT.md §3) stores each symbol of an alphabet of
size A in ``w = max(1, bitlen(A - 1))`` bits, most significant bit first, the stream padded with
zero bits to a byte: ``n`` symbols take ``ceil(n * w / 8)`` bytes. LEB128 varints (7 bits per
byte, high bit set on every byte but the last) are kept for callers outside the format (format
version 1 stored the ANS counts this way; the coders' tables are now in :mod:`.tables`).
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError

__all__ = ["raw_width", "pack_fixed", "unpack_fixed", "encode_varints", "decode_varints"]

_CHUNK = 1 << 20  # symbols per step: bounds the (chunk, w) bit matrix to a few MiB


def raw_width(alphabet: int) -> int:
    """Bits per symbol of the raw coder for an alphabet of ``alphabet`` symbols."""
    return max(1, (alphabet - 1).bit_length())


def pack_fixed(symbols: np.ndarray, width: int) -> bytes:
    """(n,) non-negative ints < 2**width -> ceil(n*width/8) bytes, MSB first."""
    sym = np.asarray(symbols, dtype=np.uint64).reshape(-1)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)          # (w,)
    bits = np.empty(sym.size * width, dtype=np.uint8)
    for start in range(0, sym.size, _CHUNK):                        # chunks, not symbols
        part = sym[start:start + _CHUNK]
        block = ((part[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # (chunk, w)
        bits[start * width:(start + part.size) * width] = block.reshape(-1)
    return np.packbits(bits).tobytes()


def unpack_fixed(payload: bytes, count: int, width: int, where: str, dtype=np.int64) -> np.ndarray:
    """Inverse of :func:`pack_fixed`: (count,) symbols of ``dtype`` (wide enough for ``width``
    bits); the payload must be exactly ceil(count*width/8) bytes."""
    need = (count * width + 7) // 8
    if len(payload) != need:
        raise FormatError(f"{where}: raw payload is {len(payload)} bytes, {count} symbols of "
                          f"{width} bits need {need}")
    raw = np.frombuffer(payload, dtype=np.uint8)
    pad = raw.size * 8 - count * width
    if pad and int(raw[-1]) & ((1 << pad) - 1):
        raise FormatError(f"{where}: raw payload has nonzero padding bits")
    weights = (np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64))  # (w,)
    out = np.empty(count, dtype=dtype)
    step = max(1, _CHUNK // width)
    for start in range(0, count, step):                              # chunks of symbols
        stop = min(count, start + step)
        first_bit, last_bit = start * width, stop * width
        byte0 = first_bit // 8
        bits = np.unpackbits(raw[byte0:(last_bit + 7) // 8])[first_bit - byte0 * 8:last_bit - byte0 * 8]
        block = bits.reshape(stop - start, width).astype(np.uint64)      # (chunk, w)
        out[start:stop] = (block * weights).sum(axis=1)
    return out


def encode_varints(values: np.ndarray) -> bytes:
    """LEB128 of each non-negative int (< 2**63), concatenated."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(1, 10):                                           # 7-bit groups, not values
        nbytes += (v >> np.uint64(7 * k)) > 0
    total = int(nbytes.sum())
    out = np.empty(total, dtype=np.uint8)
    starts = np.cumsum(nbytes) - nbytes                              # (n,) first byte of each
    for k in range(int(nbytes.max(initial=0))):
        sel = nbytes > k
        group = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (nbytes[sel] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + k] = (group | more).astype(np.uint8)
    return out.tobytes()


def decode_varints(payload: bytes, count: int, where: str) -> tuple[np.ndarray, int]:
    """The first ``count`` LEB128 ints of ``payload`` and the number of bytes they use."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)                                # last byte of each varint
    if ends.size < count:
        raise FormatError(f"{where}: table needs {count} varints, the payload holds {ends.size}")
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    ends = ends[:count]
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if int(lengths.max()) > 9:
        raise FormatError(f"{where}: table varint longer than 9 bytes")
    out = np.zeros(count, dtype=np.uint64)
    for k in range(int(lengths.max())):                              # byte positions, not values
        sel = lengths > k
        out[sel] |= (raw[starts[sel] + k].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
    return out.astype(np.int64), int(ends[-1]) + 1
