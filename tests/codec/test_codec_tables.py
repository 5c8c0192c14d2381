"""Compact coder tables (docs/FORMAT.md §3.1): round trips, golden payloads worked out by hand,
malformed tables -> FormatError naming the section, ANS with its table against the bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepshrink.codec.ans import MAX_WEIGHT, ans_decode, quantize_counts
from deepshrink.codec.entropy import decode_symbols, encode_symbols, entropy_bits, table_bytes
from deepshrink.codec.tables import decode_table, encode_table, table_bits
from deepshrink.errors import FormatError


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, MAX_WEIGHT), min_size=1, max_size=200), st.binary(max_size=8))
def test_table_round_trips(values, tail):
    v = np.array(values, dtype=np.int64)
    blob = encode_table(v)
    assert len(blob) == (table_bits(v) + 7) // 8
    out, used = decode_table(blob + tail, v.size, MAX_WEIGHT, "t")
    assert used == len(blob)
    np.testing.assert_array_equal(out, v)


def _bits(s: str) -> bytes:
    s = s.replace(" ", "")
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big")


# counts 9, 4, 2, 1, 0, 1 of the symbols 0..5, in a fixed order
GOLDEN_STREAM = [0, 1, 0, 1, 0, 0, 0, 0, 5, 1, 2, 0, 1, 2, 0, 0, 3]


def test_golden_huffman_payload():
    # lengths 1 2 3 4 0 4 -> deltas 1 1 1 1 -4 4 -> zigzag 2 2 2 2 7 8; order k=2 is cheapest,
    # groups 0..G=1: 4 codes of 3 bits (x 0-3: 000-011), 8 of 5 bits (x 4-11: 10000-10111)
    table = "0010 00001" + " 010" * 4 + " 10011 10100"
    _, payload = encode_symbols(np.array(GOLDEN_STREAM), 6, only="huffman")
    assert payload[:4] == _bits(table)
    assert payload.hex() == "20a494e8483ecb1c"
    assert table_bytes("huffman", payload, 6) == 4


def test_golden_ans_payload():
    _, payload = encode_symbols(np.array(GOLDEN_STREAM), 6, only="ans")
    assert payload.hex() == "0166128021745424d2622300"
    v, used = decode_table(payload, 6, MAX_WEIGHT, "t")
    assert used == table_bytes("ans", payload, 6) and (len(payload) - used) % 4 == 0
    assert (v > 0).tolist() == [True, True, True, True, False, True]   # used symbols, and only those
    np.testing.assert_array_equal(ans_decode(payload, len(GOLDEN_STREAM), 6, "t"), GOLDEN_STREAM)


@pytest.mark.parametrize("payload, vmax, match", [
    (b"", 31, "header needs 9 bits"),
    (_bits("1111 11111"), 31, "Exp-Golomb order 15"),          # codes over 31 bits
    (_bits("0000 00000 1"), 31, "corrupt table"),              # order 0, one group: '1' is unassigned
    (_bits("0000 00000 0 0 0 1"), 31, "padding"),              # three zeros, then a stray bit
    (_bits("0001 00001 1010 00 00"), 1, r"outside \[0, 1\]"),  # order 1: x=4 -> 2, 2, 2
    (_bits("0001 00000 01 00 00"), 31, r"outside \[0, 31\]"),  # x=1 -> -1: a negative value
])
def test_malformed_tables(payload, vmax, match):
    with pytest.raises(FormatError, match=match):
        decode_table(payload, 3, vmax, "t/codes")


def test_malformed_tables_in_the_coders_name_the_section():
    one_used = encode_table(np.array([0, 5, 0])) + b"\x01\x00\x00\x00"
    with pytest.raises(FormatError, match="t/codes.*fewer than two"):
        decode_symbols("ans", one_used, 4, 3, "t/codes")
    with pytest.raises(FormatError, match="t/codes: ANS: table value outside"):
        decode_symbols("ans", encode_table(np.array([MAX_WEIGHT + 1, 1, 1])) + bytes(4), 4, 3, "t/codes")
    with pytest.raises(FormatError, match="t/index: Huffman: table value outside"):
        decode_symbols("huffman", encode_table(np.array([32, 1, 1])) + bytes(2), 4, 3, "t/index")
    with pytest.raises(FormatError, match="t/index.*incomplete"):
        decode_symbols("huffman", encode_table(np.array([1, 2, 0])) + bytes(2), 4, 3, "t/index")


def test_quantized_weights_keep_exactly_the_used_symbols():
    rng = np.random.default_rng(3)
    for _ in range(20):
        counts = rng.integers(0, 5, size=300) * rng.integers(0, 2, size=300) ** 2
        counts[rng.integers(0, 300)] = int(rng.integers(1, 10**9))
        counts[rng.integers(0, 300)] = 1
        v, bits = quantize_counts(counts)
        np.testing.assert_array_equal(v > 0, counts > 0)
        assert int(v.max()) <= MAX_WEIGHT and bits >= table_bits(v)


def test_ans_with_its_table_is_near_the_bound():
    """A 5-bit k-means layer at ~20k nonzeros (bell-shaped code counts): table included, ANS is
    within 0.5% of n*H; so is a skewed 100k stream (a dense layer's zeros; at 30k symbols it is
    ~0.6%: the table of 21 weights and the coder's last words are ~17 bytes of ~2.8 kB)."""
    rng = np.random.default_rng(4)
    p = np.exp(-0.5 * ((np.arange(32) - 15.5) / 3.5) ** 2)
    for probs, n in ((p / p.sum(), 20_000), (np.r_[0.92, np.full(20, 0.004)], 100_000)):
        sym = rng.choice(probs.size, size=n, p=probs)
        coder, payload = encode_symbols(sym, probs.size, only="ans")
        assert len(payload) <= 1.005 * entropy_bits(sym, probs.size) / 8
        np.testing.assert_array_equal(decode_symbols(coder, payload, n, probs.size, "t"), sym)
