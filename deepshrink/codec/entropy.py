"""Per-section coder choice: const, raw, Huffman or ANS, whichever payload is smallest.

A section is a stream of ``n`` symbols from ``{0, ..., A-1}``. Its Shannon bound is
``n * H`` bits with ``H = -sum_s p_s log2 p_s`` over the stream's own histogram (the order-0
entropy): no coder that spends a fixed number of bits per symbol value can beat it on average.
Huffman lands within a bit per symbol of it, ANS within a fraction of a percent; the table each
one stores is part of its payload (both in the compact form of :mod:`.tables`: the Huffman code
lengths, the ANS square-root weights), so on a short stream raw packing can win. Byte sections
(codebooks, lossless tensors) are stored as-is or through zlib, whichever is smaller.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..errors import FormatError
from .ans import ans_decode, ans_encode, ans_table_bytes, quantize_counts
from .bitpack import pack_fixed, raw_width, unpack_fixed
from .huffman import MAX_CODE_LENGTH, huffman_decode, huffman_encode
from .tables import decode_table, encode_table

__all__ = ["SYMBOL_CODERS", "BYTE_CODERS", "entropy_bits", "encode_symbols", "decode_symbols", "symbol_dtype",
           "encode_bytes", "decode_bytes", "estimate_bytes", "estimate_from_counts", "table_bytes"]

SYMBOL_CODERS = ("const", "raw", "huffman", "ans")
BYTE_CODERS = ("bytes", "zlib")
MAX_RAW_ALPHABET = 1 << 32
_INFLATE_STEP = 1 << 20          # bytes of zlib output per step, written into the final buffer


def symbol_dtype(alphabet: int) -> np.dtype:
    """The narrowest unsigned type holding symbols in [0, alphabet): uint8, uint16 or uint32
    (every coder's symbols are < 2^32: const stores a u32, the others need alphabet <= 2^32)."""
    return np.dtype(np.uint8 if alphabet <= 1 << 8 else np.uint16 if alphabet <= 1 << 16 else np.uint32)


def entropy_bits(symbols: np.ndarray, alphabet: int | None = None) -> float:
    """n * H: the order-0 Shannon bound of the stream in bits."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols, minlength=alphabet or 0)
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum())


def estimate_from_counts(counts: np.ndarray, alphabet: int) -> float:
    """Size estimate of a stream with this histogram: min(raw, ANS's n*H + table + KL loss, in
    bytes, + 4 for the coder's last word), or 4 (const) for a single used symbol."""
    counts = np.asarray(counts, dtype=np.int64)
    n = float(counts.sum())
    if n == 0:
        return 0.0
    raw = math.ceil(n * raw_width(alphabet) / 8)
    c = counts[counts > 0].astype(np.float64)
    if c.size < 2:
        return min(float(raw), 4.0)
    if alphabet > 1 << 16:
        return float(raw)
    bound = float(-(c * np.log2(c / n)).sum())
    return min(float(raw), (bound + quantize_counts(counts, quick=True)[1]) / 8 + 4)


def estimate_bytes(symbols: np.ndarray, alphabet: int) -> float:
    """:func:`estimate_from_counts` of a stream."""
    return estimate_from_counts(np.bincount(symbols, minlength=alphabet), alphabet) if symbols.size else 0.0


def _huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    """Compact length table (:mod:`.tables`) + Huffman bit stream."""
    payload = huffman_encode(symbols, alphabet)
    if payload is None:
        return None
    lengths = np.frombuffer(payload[:alphabet], dtype=np.uint8)
    return encode_table(lengths) + payload[alphabet:]


def _huffman_decode(payload: bytes, count: int, alphabet: int, where: str) -> np.ndarray:
    if alphabet > 1 << 16:
        raise FormatError(f"{where}: Huffman alphabet {alphabet} exceeds {1 << 16}")
    lengths, used = decode_table(payload, alphabet, MAX_CODE_LENGTH, f"{where}: Huffman")
    return huffman_decode(lengths.astype(np.uint8).tobytes() + payload[used:], count, alphabet, where,
                          symbol_dtype(alphabet))


def table_bytes(coder: str, payload: bytes, alphabet: int) -> int:
    """Bytes of the table at the start of a ``huffman`` or ``ans`` payload (0 for the others)."""
    if coder == "huffman":
        return decode_table(payload, alphabet, MAX_CODE_LENGTH, "huffman")[1]
    if coder == "ans":
        return ans_table_bytes(payload, alphabet)
    return 0


def _const_encode(symbols: np.ndarray) -> bytes | None:
    if symbols.size == 0:
        return b""
    first = int(symbols[0])
    return first.to_bytes(4, "little") if bool((symbols == first).all()) else None


def encode_symbols(symbols: np.ndarray, alphabet: int, only: str | None = None) -> tuple[str, bytes]:
    """(coder, payload) of the smallest applicable coder (ties: const, raw, huffman, ans);
    ``only`` forces one (tests, benchmarks).

    The same choice as encoding with every coder, with less work: raw's size is known without
    packing, and Huffman is run only when its floor (table + n*H bits) could beat the others.
    """
    symbols = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
    if symbols.size and (int(symbols.min()) < 0 or int(symbols.max()) >= alphabet):
        raise ValueError(f"symbols outside the alphabet [0, {alphabet})")
    width = raw_width(alphabet)
    coders = {"const": lambda: _const_encode(symbols),
              "raw": lambda: pack_fixed(symbols, width) if alphabet <= MAX_RAW_ALPHABET else None,
              "huffman": lambda: _huffman_encode(symbols, alphabet),
              "ans": lambda: ans_encode(symbols, alphabet)}
    if only:
        payload = coders[only]()
        if payload is None:
            raise ValueError(f"coder {only!r} does not apply to this stream")
        return only, payload
    raw_size = (symbols.size * width + 7) // 8 if alphabet <= MAX_RAW_ALPHABET else None
    const = coders["const"]()
    if const is not None and (raw_size is None or len(const) <= raw_size):
        return "const", const
    sizes: dict[str, int] = {}
    payloads: dict[str, bytes] = {}
    ans = coders["ans"]()
    if ans is not None:
        sizes["ans"], payloads["ans"] = len(ans), ans
    if raw_size is not None:
        sizes["raw"] = raw_size
    floor = 2 + math.ceil(entropy_bits(symbols, alphabet) / 8 - 1e-6)   # table >= 2 bytes, stream >= n*H bits
    if alphabet <= 1 << 16 and (not sizes or floor <= min(sizes.values())):
        huff = coders["huffman"]()
        if huff is not None:
            sizes["huffman"], payloads["huffman"] = len(huff), huff
    if not sizes:
        raise ValueError("no coder applies to this stream")
    best = min(sizes, key=lambda c: (sizes[c], SYMBOL_CODERS.index(c)))
    return best, payloads[best] if best in payloads else coders[best]()


def decode_symbols(coder: str, payload: bytes, count: int, alphabet: int, where: str) -> np.ndarray:
    """(count,) symbols of type ``symbol_dtype(alphabet)``, each checked to lie in [0, alphabet).

    Allocates the output and chunk-sized temporaries only (no full-size int64 copy): ``const``
    and ``ans`` streams can declare many symbols per payload byte."""
    dtype = symbol_dtype(alphabet)
    if coder == "const":
        if count == 0:
            if payload:
                raise FormatError(f"{where}: empty const section has {len(payload)} payload bytes")
            return np.zeros(0, dtype=dtype)
        if len(payload) != 4:
            raise FormatError(f"{where}: const payload is {len(payload)} bytes, expected 4")
        value = int.from_bytes(payload, "little")
        if value >= alphabet:                                 # checked before the stream exists
            raise FormatError(f"{where}: symbol outside the alphabet [0, {alphabet})")
        return np.full(count, value, dtype=dtype)
    if coder == "raw":
        if alphabet > MAX_RAW_ALPHABET:
            raise FormatError(f"{where}: raw alphabet {alphabet} exceeds 2^32")
        out = unpack_fixed(payload, count, raw_width(alphabet), where, dtype)
    elif coder == "huffman":
        out = _huffman_decode(payload, count, alphabet, where)
    elif coder == "ans":
        out = ans_decode(payload, count, alphabet, where, dtype)
    else:
        raise FormatError(f"{where}: unknown symbol coder {coder!r}")
    if out.size and int(out.max()) >= alphabet:              # unsigned: never below 0
        raise FormatError(f"{where}: symbol outside the alphabet [0, {alphabet})")
    return out


def encode_bytes(data: bytes) -> tuple[str, bytes]:
    """('bytes' | 'zlib', payload): zlib level 9 only when it is smaller."""
    packed = zlib.compress(data, 9)
    return ("zlib", packed) if len(packed) < len(data) else ("bytes", data)


def decode_bytes(coder: str, payload: bytes, count: int, where: str) -> bytes | bytearray:
    """Exactly ``count`` bytes (``bytes``: the payload itself; ``zlib``: a writable bytearray).

    zlib output is written step by step into one buffer of ``count`` bytes, so inflating never
    holds more than ``count`` bytes plus one step, and a stream that would go past ``count`` stops
    there."""
    if coder == "bytes":
        if len(payload) != count:
            raise FormatError(f"{where}: stored section is {len(payload)} bytes, expected {count}")
        return payload
    if coder != "zlib":
        raise FormatError(f"{where}: unknown byte coder {coder!r}")
    out, done, tail = bytearray(count), 0, payload
    inflater = zlib.decompressobj()
    try:
        while not inflater.eof:
            piece = inflater.decompress(tail, min(_INFLATE_STEP, count + 1 - done))
            if done + len(piece) > count:
                raise FormatError(f"{where}: zlib stream does not inflate to exactly {count} bytes")
            out[done:done + len(piece)] = piece
            done += len(piece)
            tail = inflater.unconsumed_tail
            if not piece:
                break                      # no progress: the input ended before the end of the stream
    except zlib.error as exc:
        raise FormatError(f"{where}: corrupt zlib stream ({exc})") from None
    if done != count or not inflater.eof or inflater.unused_data:
        raise FormatError(f"{where}: zlib stream does not inflate to exactly {count} bytes")
    return out
