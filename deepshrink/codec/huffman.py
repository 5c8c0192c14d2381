"""Canonical Huffman coding of a symbol stream (the entropy stage of Deep Compression).

Han, Mao & Dally (2016) Huffman-code the codebook indices and the relative sparse indices of
each layer. A Huffman code gives every symbol ``s`` a prefix-free code of ``l_s`` bits with
``sum 2^-l_s = 1``; its mean length lies within 1 bit per symbol of the entropy
``H = -sum p_s log2 p_s`` (closer when no symbol is very frequent). The *canonical* code is fixed
by the lengths alone: symbols sorted by (length, value) take consecutive codes, so the table is
just one length byte per symbol of the alphabet (docs/FORMAT.md §3).

The bit work is bitarray's (C): ``canonical_huffman`` builds the lengths, ``bitarray.encode``
writes the stream, ``canonical_decode`` reads it; no per-symbol Python loop.
"""

from __future__ import annotations

import itertools

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman

from ..errors import FormatError

__all__ = ["MAX_CODE_LENGTH", "MAX_ALPHABET", "huffman_encode", "huffman_decode", "canonical_codes"]

MAX_CODE_LENGTH = 31          # bitarray's canonical_decode limit
MAX_ALPHABET = 1 << 16
_CHUNK = 1 << 20


def _canonical_tables(lengths: np.ndarray) -> tuple[list[int], list[int]]:
    """(count per length 0..L, used symbols in canonical order) for ``canonical_decode``."""
    used = np.flatnonzero(lengths)
    order = np.lexsort((used, lengths[used]))                      # by length, then value
    top = int(lengths.max())
    count = np.bincount(lengths[used], minlength=top + 1)
    count[0] = 0
    return count.tolist(), used[order].tolist()


def canonical_codes(lengths: np.ndarray) -> dict[int, bitarray]:
    """{symbol: code} of the canonical code with these lengths (0 = unused symbol)."""
    count, symbols = _canonical_tables(lengths)
    codes, code, pos = {}, 0, 0
    for length in range(1, len(count)):                             # lengths, not symbols
        for sym in symbols[pos:pos + count[length]]:                # at most the alphabet
            codes[sym] = bitarray(format(code, f"0{length}b"), endian="big")
            code += 1
        pos += count[length]
        code <<= 1
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    """Table + bit stream of ``symbols``, or None when Huffman does not apply.

    Not applicable: an alphabet above 65536, fewer than two used symbols (coder ``const``), or a
    code longer than 31 bits (needs over ~2 billion symbols with Fibonacci-like counts).
    """
    if alphabet > MAX_ALPHABET:
        return None
    counts = np.bincount(symbols, minlength=alphabet)
    used = np.flatnonzero(counts)
    if used.size < 2:
        return None
    table, _, _ = canonical_huffman({int(s): int(counts[s]) for s in used})
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[used] = [len(table[int(s)]) for s in used]
    if int(lengths.max()) > MAX_CODE_LENGTH:
        return None
    codes = canonical_codes(lengths)
    stream = bitarray(endian="big")
    for start in range(0, symbols.size, _CHUNK):                    # chunks, not symbols
        stream.encode(codes, symbols[start:start + _CHUNK].tolist())
    return lengths.astype(np.uint8).tobytes() + stream.tobytes()  # tobytes pads with zero bits


def _check_lengths(lengths: np.ndarray, where: str) -> None:
    if int(lengths.max(initial=0)) > MAX_CODE_LENGTH:
        raise FormatError(f"{where}: Huffman code length {int(lengths.max())} exceeds {MAX_CODE_LENGTH}")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size < 2:
        raise FormatError(f"{where}: Huffman table uses {used.size} symbol(s), needs at least 2")
    kraft = int((np.int64(1) << (MAX_CODE_LENGTH - used)).sum())   # sum 2^-l, scaled by 2^31
    if kraft > 1 << MAX_CODE_LENGTH:
        raise FormatError(f"{where}: Huffman table is over-subscribed (Kraft sum > 1)")
    if kraft < 1 << MAX_CODE_LENGTH:
        raise FormatError(f"{where}: Huffman table is incomplete (Kraft sum < 1)")


def huffman_decode(payload: bytes, count: int, alphabet: int, where: str, dtype=np.int64) -> np.ndarray:
    """``count`` symbols (of ``dtype``) from a ``huffman_encode`` payload; FormatError on any
    inconsistency. A symbol takes at least one bit, so ``count`` is bounded by the payload."""
    if alphabet > MAX_ALPHABET:
        raise FormatError(f"{where}: Huffman alphabet {alphabet} exceeds {MAX_ALPHABET}")
    if len(payload) < alphabet:
        raise FormatError(f"{where}: Huffman table needs {alphabet} bytes, payload has {len(payload)}")
    lengths = np.frombuffer(payload[:alphabet], dtype=np.uint8).astype(np.int64)
    _check_lengths(lengths, where)
    body = payload[alphabet:]
    if count > 8 * len(body):
        raise FormatError(f"{where}: {count} symbols cannot fit in {len(body)} bytes of Huffman stream")
    stream = bitarray(endian="big")
    stream.frombytes(body)
    count_list, symbols = _canonical_tables(lengths)
    try:
        decoded = itertools.islice(canonical_decode(stream, count_list, symbols), count)
        out = np.fromiter(decoded, dtype=dtype, count=count)
    except ValueError as exc:  # stream too short, or ends inside a code
        raise FormatError(f"{where}: corrupt Huffman stream ({exc})") from None
    nbits = sum(int(lengths[out[i:i + _CHUNK]].sum()) for i in range(0, count, _CHUNK))   # chunks, not symbols
    if (nbits + 7) // 8 != len(body):
        raise FormatError(f"{where}: Huffman stream is {len(body)} bytes, its {count} symbols use {nbits} bits")
    if nbits % 8 and stream[nbits:].any():
        raise FormatError(f"{where}: Huffman stream has nonzero padding bits")
    return out
