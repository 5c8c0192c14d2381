"""Asymmetric numeral systems (rANS) coding of a symbol stream, through constriction.

Duda (2013): ANS keeps the coder state in one integer and spends ``-log2 q_s`` bits on a symbol
that the model gives probability ``q_s`` (up to the model's 24-bit fixed point), so ``n`` symbols
with counts ``c_s`` cost ``n * H + n * KL(p || q)`` bits plus a few words, ``p_s = c_s / n``.

The model must be stored, so it is worth quantizing (Rissanen's two-part code): the table holds
one integer ``v_s`` per symbol of the alphabet and ``q_s = v_s^2 / sum_t v_t^2`` (``v_s = 0``:
symbol unused). Storing the *square root* of the count at a step ``1/t`` makes the KL loss of a
symbol about ``1 / (24 ln 2 t^2)`` bits whatever its count (a count's Poisson noise is uniform in
the sqrt domain), while the table (:mod:`.tables`: deltas, Exp-Golomb) costs about
``log2(t sqrt(c_s))`` bits for it. The writer picks ``t`` per section among the powers of
``2^(1/4)`` from ``2^-10`` to ``2^2`` (every fourth, then the three either side of the best) to minimise table bits + ``n * KL`` (the exact cross-entropy of the stream under
``q``); the reader needs only the ``v_s`` (docs/FORMAT.md §3).

constriction's ``AnsCoder`` (Rust) does the coding, vectorised over the whole stream.
"""

from __future__ import annotations

import numpy as np
import constriction

from ..errors import FormatError
from .tables import decode_table, encode_table, table_bits

Categorical = constriction.stream.model.Categorical   # native submodules: attribute access only
AnsCoder = constriction.stream.stack.AnsCoder

__all__ = ["MAX_ALPHABET", "MAX_WEIGHT", "ans_encode", "ans_decode", "quantize_counts", "ans_table_bytes"]

MAX_ALPHABET = 1 << 16
MAX_WEIGHT = (1 << 16) - 1            # v_s <= 2^16 - 1: q_s < 2^32, sum q < 2^48 (exact in float64)
_BOTTOM, _TOP = -40, 8                    # scales t = 2^(i/4), i in [_BOTTOM, _TOP]: 2^-10 .. 2^2
_CHUNK = 1 << 17                          # symbols decoded per call


def _excess_bits(counts: np.ndarray, v: np.ndarray) -> float:
    """n * KL(p || v^2 / sum v^2) in bits; counts > 0 must have v > 0."""
    used = counts > 0
    c = counts[used].astype(np.float64)
    q = v.astype(np.float64) ** 2                                     # (A,)
    n = c.sum()
    return float((c * np.log2(c / n)).sum() - (c * np.log2(q[used] / q.sum())).sum())


def quantize_counts(counts: np.ndarray, quick: bool = False) -> tuple[np.ndarray, float]:
    """(v, bits): the table weights minimising table bits + n*KL, and that total (before the
    table's byte padding). ``v_s = max(1, round(t sqrt(c_s)))`` for used symbols, 0 otherwise.
    ``quick``: only ``t = 2^(-3/4)``, near the optimum ``1/sqrt(3)`` of the module docstring's
    model (the writer's layout estimates)."""
    counts = np.asarray(counts, dtype=np.int64)
    used = counts > 0
    root = np.sqrt(counts.astype(np.float64))                        # (A,)
    cap = int(np.floor(4 * np.log2(MAX_WEIGHT / max(1.0, float(root.max())))))   # largest i: t = 2^(i/4) fits

    def cost(i: int) -> tuple[float, np.ndarray]:
        v = np.where(used, np.maximum(1, np.rint(2.0 ** (i / 4) * root)), 0).astype(np.int64)
        return table_bits(v) + _excess_bits(counts, v), v

    if quick:
        return cost(min(cap, -3))[::-1]
    coarse = {i: cost(i) for i in range(min(cap, _TOP), _BOTTOM - 1, -4)}          # t halves
    mid = min(coarse, key=lambda i: coarse[i][0])
    fine = {i: cost(i) for i in range(mid - 3, min(mid + 3, cap) + 1) if i not in coarse and i >= _BOTTOM}
    bits, v = min([*coarse.values(), *fine.values()], key=lambda bv: bv[0])
    return v, bits


def _model(v: np.ndarray) -> tuple[Categorical, np.ndarray]:
    """The categorical model over the used symbols and those symbols, in increasing order."""
    used = np.flatnonzero(v)
    q = v[used].astype(np.float64) ** 2                               # (m,) exact integers < 2^32
    return Categorical(q / q.sum(), perfect=False), used


def ans_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    """Table + ANS words of ``symbols``, or None for an alphabet above 65536 or fewer than two
    used symbols (coder ``const``)."""
    if alphabet > MAX_ALPHABET:
        return None
    counts = np.bincount(symbols, minlength=alphabet)
    if np.count_nonzero(counts) < 2:
        return None
    v, _ = quantize_counts(counts)
    model, used = _model(v)
    rank = np.zeros(alphabet, dtype=np.int32)
    rank[used] = np.arange(used.size, dtype=np.int32)
    coder = AnsCoder()
    coder.encode_reverse(rank[symbols], model)                       # (n,) ranks
    words = coder.get_compressed().astype("<u4")
    return encode_table(v) + words.tobytes()


def ans_table_bytes(payload: bytes, alphabet: int) -> int:
    """Bytes of the table at the start of an ``ans`` payload (benchmarks: stream vs table)."""
    return decode_table(payload, alphabet, MAX_WEIGHT, "ans")[1]


def ans_decode(payload: bytes, count: int, alphabet: int, where: str, dtype=np.int64) -> np.ndarray:
    """``count`` symbols (of ``dtype``) from an ``ans_encode`` payload; FormatError on any
    inconsistency. Decoded a chunk at a time into the output: a skewed model codes millions of
    symbols per payload byte, so ``count`` is not bounded by the payload."""
    if alphabet > MAX_ALPHABET:
        raise FormatError(f"{where}: ANS alphabet {alphabet} exceeds {MAX_ALPHABET}")
    v, used_bytes = decode_table(payload, alphabet, MAX_WEIGHT, f"{where}: ANS")
    if int(np.count_nonzero(v)) < 2:
        raise FormatError(f"{where}: ANS table uses fewer than two symbols")
    body = payload[used_bytes:]
    if len(body) % 4 or not body:
        raise FormatError(f"{where}: ANS stream is {len(body)} bytes, not a positive multiple of 4")
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    model, used = _model(v)
    symbol_of_rank = used.astype(dtype)                              # (m,)
    out = np.empty(count, dtype=dtype)
    try:
        coder = AnsCoder(words)
        for start in range(0, count, _CHUNK):                        # chunks, not symbols
            stop = min(count, start + _CHUNK)
            out[start:stop] = symbol_of_rank[coder.decode(model, stop - start)]   # (chunk,) int32 ranks
        done = coder.is_empty()
    except (ValueError, RuntimeError, OverflowError, IndexError) as exc:
        raise FormatError(f"{where}: corrupt ANS stream ({exc})") from None
    if not done:
        raise FormatError(f"{where}: ANS stream has data left after {count} symbols")
    return out
