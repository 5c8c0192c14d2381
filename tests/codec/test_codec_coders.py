"""Symbol coders: round trips (property tests), sizes against the entropy bound, bad tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepshrink.codec.bitpack import decode_varints, encode_varints, pack_fixed, raw_width, unpack_fixed
from deepshrink.codec.entropy import decode_bytes, decode_symbols, encode_bytes, encode_symbols, entropy_bits
from deepshrink.codec.huffman import canonical_codes, huffman_decode, huffman_encode
from deepshrink.errors import FormatError


@st.composite
def streams(draw):
    alphabet = draw(st.integers(1, 300))
    n = draw(st.integers(0, 400))
    skew = draw(st.floats(0.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.random(alphabet) ** (1 + 4 * skew)
    p /= p.sum()
    return rng.choice(alphabet, size=n, p=p).astype(np.int64), alphabet


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from([None, "raw", "huffman", "ans", "const"]))
def test_every_coder_round_trips(stream, only):
    sym, alphabet = stream
    try:
        coder, payload = encode_symbols(sym, alphabet, only=only)
    except ValueError:           # the forced coder does not apply (e.g. const on a varied stream)
        assert only is not None
        return
    back = decode_symbols(coder, payload, sym.size, alphabet, "t")
    np.testing.assert_array_equal(back, sym)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_choice_is_the_smallest(stream):
    sym, alphabet = stream
    coder, payload = encode_symbols(sym, alphabet)
    for other in ("raw", "huffman", "ans"):
        try:
            assert len(payload) <= len(encode_symbols(sym, alphabet, only=other)[1])
        except ValueError:
            pass


def test_degenerate_streams_use_const():
    assert encode_symbols(np.zeros(0, dtype=np.int64), 5) == ("const", b"")
    coder, payload = encode_symbols(np.full(1000, 3), 5)
    assert (coder, len(payload)) == ("const", 4)
    np.testing.assert_array_equal(decode_symbols(coder, payload, 1000, 5, "t"), np.full(1000, 3))


def test_raw_packing_matches_a_bit_string_oracle():
    rng = np.random.default_rng(0)
    for width in (1, 3, 7, 8, 13, 32):
        sym = rng.integers(0, 1 << width, size=37, dtype=np.uint64)
        bits = "".join(format(int(v), f"0{width}b") for v in sym)
        bits += "0" * (-len(bits) % 8)
        assert pack_fixed(sym, width) == int(bits, 2).to_bytes(len(bits) // 8, "big")
        np.testing.assert_array_equal(unpack_fixed(pack_fixed(sym, width), sym.size, width, "t"), sym.astype(np.int64))
    assert raw_width(1) == 1 and raw_width(2) == 1 and raw_width(33) == 6


def test_varints_round_trip_and_match_leb128():
    vals = np.array([0, 1, 127, 128, 300, 2**35 + 7], dtype=np.int64)
    blob = encode_varints(vals)
    assert blob[:5] == bytes([0, 1, 127, 0x80, 0x01])
    out, used = decode_varints(blob + b"\xff", vals.size, "t")
    np.testing.assert_array_equal(out, vals)
    assert used == len(blob)
    with pytest.raises(FormatError, match="varints"):
        decode_varints(b"\x80\x80", 1, "t")


def test_canonical_codes_are_prefix_free_and_ordered():
    lengths = np.array([2, 1, 3, 3, 0])
    codes = canonical_codes(lengths)
    assert {s: c.to01() for s, c in codes.items()} == {1: "0", 0: "10", 2: "110", 3: "111"}


def test_huffman_and_ans_against_the_bound():
    rng = np.random.default_rng(1)
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02])
    sym = rng.choice(p.size, size=200_000, p=p)
    bound = entropy_bits(sym, p.size) / 8
    huff = len(huffman_encode(sym, p.size))
    _, ans = encode_symbols(sym, p.size, only="ans")
    assert bound <= huff <= 1.03 * bound
    assert bound <= len(ans) <= 1.005 * bound
    assert entropy_bits(np.zeros(0, dtype=np.int64)) == 0.0
    assert math.isclose(entropy_bits(np.array([0, 1, 0, 1])), 4.0)


def _huffman_payload(lengths: list[int], stream: bytes = b"\x00") -> bytes:
    return bytes(lengths) + stream


@pytest.mark.parametrize("lengths, message", [
    ([1, 2, 0, 0], "incomplete"),
    ([1, 1, 1, 0], "over-subscribed"),
    ([1, 0, 0, 0], "at least 2"),
    ([32, 1, 0, 0], "exceeds"),
])
def test_bad_huffman_tables(lengths, message):
    with pytest.raises(FormatError, match=message):
        huffman_decode(_huffman_payload(lengths), 4, 4, "t/codes")


def test_huffman_stream_checks():
    sym = np.array([0, 1, 1, 2, 2, 2, 2, 2])
    payload = huffman_encode(sym, 3)
    np.testing.assert_array_equal(huffman_decode(payload, 8, 3, "t"), sym)
    for bad, count in [(payload[:-1], 8), (payload + b"\x00", 8), (payload, 20), (payload[:2], 1)]:
        with pytest.raises(FormatError):
            huffman_decode(bad, count, 3, "t")
    with pytest.raises(FormatError, match="padding"):
        huffman_decode(payload[:-1] + bytes([payload[-1] | 1]), 8, 3, "t")


def test_ans_corruption_is_a_format_error():
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 6, size=3000)
    _, payload = encode_symbols(sym, 6, only="ans")
    for i in range(0, len(payload), 7):
        bad = bytearray(payload)
        bad[i] ^= 0x5A
        try:
            out = decode_symbols("ans", bytes(bad), sym.size, 6, "t/codes")
        except FormatError:
            continue
        assert out.shape == sym.shape                    # a lucky flip may decode; never crash
    with pytest.raises(FormatError):
        decode_symbols("ans", payload[:-4], sym.size, 6, "t")
    for wrong in (sym.size - 1, sym.size + 1):           # the count is the header's: never a crash
        try:
            assert decode_symbols("ans", payload, wrong, 6, "t").shape == (wrong,)
        except FormatError:
            pass


def test_byte_coders():
    data = bytes(1000)
    coder, payload = encode_bytes(data)
    assert coder == "zlib" and decode_bytes(coder, payload, 1000, "t") == data
    assert encode_bytes(b"\x01\x02") == ("bytes", b"\x01\x02")
    for bad_count in (999, 1001):
        with pytest.raises(FormatError, match="exactly"):
            decode_bytes(coder, payload, bad_count, "t")
    with pytest.raises(FormatError, match="zlib"):
        decode_bytes("zlib", b"\x78\x9c garbage", 10, "t")
    with pytest.raises(FormatError, match="unknown"):
        decode_bytes("lz4", b"", 0, "t")
