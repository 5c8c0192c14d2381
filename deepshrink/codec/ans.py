"""Asymmetric numeral systems (rANS) coding of a symbol stream, through constriction.

Duda (2013): ANS keeps the coder state in one integer and spends ``-log2 p_s`` bits on a symbol
of probability ``p_s`` up to the fixed-point precision of ``p_s`` (24 bits here), so a stream of
``n`` symbols costs ``n*H`` bits plus a few words, where Huffman pays up to one bit per symbol
over ``H``. The model is the stream's own histogram, stored as LEB128 counts of every symbol of
the alphabet; probabilities are ``count/sum`` in float64 over the used symbols (docs/FORMAT.md §3).

constriction's ``AnsCoder`` (Rust) does the coding, vectorised over the whole stream.
"""

from __future__ import annotations

import numpy as np
import constriction

from ..errors import FormatError
from .bitpack import decode_varints, encode_varints

Categorical = constriction.stream.model.Categorical   # native submodules: attribute access only
AnsCoder = constriction.stream.stack.AnsCoder

__all__ = ["MAX_ALPHABET", "ans_encode", "ans_decode"]

MAX_ALPHABET = 1 << 16


def _model(counts: np.ndarray) -> tuple[Categorical, np.ndarray]:
    """The categorical model over the used symbols and those symbols, in increasing order."""
    used = np.flatnonzero(counts)
    probs = counts[used].astype(np.float64) / float(counts[used].sum())   # (m,)
    return Categorical(probs, perfect=False), used


def ans_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    """Counts table + ANS words of ``symbols``, or None for an alphabet above 65536 or fewer
    than two used symbols (coder ``const``)."""
    if alphabet > MAX_ALPHABET:
        return None
    counts = np.bincount(symbols, minlength=alphabet)
    if np.count_nonzero(counts) < 2:
        return None
    model, used = _model(counts)
    rank = np.zeros(alphabet, dtype=np.int32)
    rank[used] = np.arange(used.size, dtype=np.int32)
    coder = AnsCoder()
    coder.encode_reverse(rank[symbols], model)                       # (n,) ranks
    words = coder.get_compressed().astype("<u4")
    return encode_varints(counts) + words.tobytes()


def ans_decode(payload: bytes, count: int, alphabet: int, where: str) -> np.ndarray:
    """``count`` symbols from an ``ans_encode`` payload; FormatError on any inconsistency."""
    if alphabet > MAX_ALPHABET:
        raise FormatError(f"{where}: ANS alphabet {alphabet} exceeds {MAX_ALPHABET}")
    counts, used_bytes = decode_varints(payload, alphabet, where)
    if int(counts.sum()) != count:
        raise FormatError(f"{where}: ANS counts sum to {int(counts.sum())}, the section holds {count} symbols")
    if int(np.count_nonzero(counts)) < 2:
        raise FormatError(f"{where}: ANS table uses fewer than two symbols")
    body = payload[used_bytes:]
    if len(body) % 4 or not body:
        raise FormatError(f"{where}: ANS stream is {len(body)} bytes, not a positive multiple of 4")
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    model, used = _model(counts)
    try:
        coder = AnsCoder(words)
        ranks = coder.decode(model, count)                          # (count,) int32
        done = coder.is_empty()
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise FormatError(f"{where}: corrupt ANS stream ({exc})") from None
    if not done:
        raise FormatError(f"{where}: ANS stream has data left after {count} symbols")
    out = used[ranks.astype(np.int64)]
    if not np.array_equal(np.bincount(out, minlength=alphabet), counts):
        raise FormatError(f"{where}: decoded ANS symbols do not match the stored counts")
    return out
