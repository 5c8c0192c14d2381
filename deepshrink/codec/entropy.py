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

__all__ = ["SYMBOL_CODERS", "BYTE_CODERS", "entropy_bits", "encode_symbols", "decode_symbols",
           "encode_bytes", "decode_bytes", "estimate_bytes", "estimate_from_counts", "table_bytes"]

SYMBOL_CODERS = ("const", "raw", "huffman", "ans")
BYTE_CODERS = ("bytes", "zlib")
MAX_RAW_ALPHABET = 1 << 32


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
    return huffman_decode(lengths.astype(np.uint8).tobytes() + payload[used:], count, alphabet, where)


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
    """(count,) int64 symbols, each checked to lie in [0, alphabet)."""
    if coder == "const":
        if count == 0:
            if payload:
                raise FormatError(f"{where}: empty const section has {len(payload)} payload bytes")
            return np.zeros(0, dtype=np.int64)
        if len(payload) != 4:
            raise FormatError(f"{where}: const payload is {len(payload)} bytes, expected 4")
        out = np.full(count, int.from_bytes(payload, "little"), dtype=np.int64)
    elif coder == "raw":
        if alphabet > MAX_RAW_ALPHABET:
            raise FormatError(f"{where}: raw alphabet {alphabet} exceeds 2^32")
        out = unpack_fixed(payload, count, raw_width(alphabet), where)
    elif coder == "huffman":
        out = _huffman_decode(payload, count, alphabet, where)
    elif coder == "ans":
        out = ans_decode(payload, count, alphabet, where)
    else:
        raise FormatError(f"{where}: unknown symbol coder {coder!r}")
    if out.size and (int(out.min()) < 0 or int(out.max()) >= alphabet):
        raise FormatError(f"{where}: symbol outside the alphabet [0, {alphabet})")
    return out


def encode_bytes(data: bytes) -> tuple[str, bytes]:
    """('bytes' | 'zlib', payload): zlib level 9 only when it is smaller."""
    packed = zlib.compress(data, 9)
    return ("zlib", packed) if len(packed) < len(data) else ("bytes", data)


def decode_bytes(coder: str, payload: bytes, count: int, where: str) -> bytes:
    """Exactly ``count`` bytes; zlib output is capped at ``count`` + 1 bytes while inflating."""
    if coder == "bytes":
        if len(payload) != count:
            raise FormatError(f"{where}: stored section is {len(payload)} bytes, expected {count}")
        return payload
    if coder != "zlib":
        raise FormatError(f"{where}: unknown byte coder {coder!r}")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, count + 1)
        complete = inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data
    except zlib.error as exc:
        raise FormatError(f"{where}: corrupt zlib stream ({exc})") from None
    if len(out) != count or not complete:
        raise FormatError(f"{where}: zlib stream does not inflate to exactly {count} bytes")
    return out
