"""Format version 3's cheaper side information (issue #19, docs/FORMAT.md §2.1, §4, §6):
the header zlib'd with a preset dictionary, the column-adaptive bitmap layout, and version-2
files still loading.

- the bitmap layout round-trips bit for bit (all zeros but one, all ones, empty rows, one
  element, one row, one column, rows wider than a decoding step, per-channel codebooks, random
  tensors), and the writer picks it only where it is the smallest;
- a version-2 file written by the old writer (committed fixture) loads, and ``dumps(version=2)``
  still writes it byte for byte;
- corrupt, truncated, foreign-dictionary and bomb headers, and every broken bitmap field or
  stream, are FormatErrors naming the spot.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from deepshrink.codec import dumps
from deepshrink.codec.adaptive import CHUNK, adaptive_decode, adaptive_encode, probabilities
from deepshrink.codec.container import (FLAG_ZLIB_HEADER, HEADER_UNITS, MAGIC, PREAMBLE, compress_header,
                                        element_limit, pack_file, parse_file)
from deepshrink.codec.entropy import encode_symbols
from deepshrink.codec.header_dict import (DICT_LINES, HEADER_DICT, HEADER_DICT_ADLER32, HEADER_DICT_CRC32,
                                          HEADER_DICT_SIZE)
from deepshrink.codec.quantized import Section, codes_of, encode_quantized
from deepshrink.codec.report import report_from_bytes
from deepshrink.codec.schema import ENTRY_UNITS, entry_units
from deepshrink.codec.sparse import bitmap_layout, choose_layout
from deepshrink.errors import FormatError
from deepshrink.io import ModelInfo

from codec_helpers import _join, decode_blob, edit_header, quantize_like_kmeans, reseal, split_file

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.detach().contiguous().reshape(-1).view(torch.uint8)

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


def _bitmap_file(weight: torch.Tensor, codebook: torch.Tensor, version: int = 3) -> bytes:
    """A one-tensor file whose weight is stored in the bitmap layout, whatever the writer would pick."""
    positions, codes = codes_of("w", weight, codebook)
    k = int(codebook.shape[-1])
    layout = bitmap_layout(positions, codes, k, tuple(weight.shape))
    assert layout is not None
    fields, _ = encode_quantized("w", weight, codebook, 4)
    sections = [Section("codebook", "bytes", codebook.half().numpy().tobytes(), codebook.numel() * 2, 256)]
    for name, (coder, payload, count, alphabet) in layout.coded.items():
        sections.append(Section(name, coder, payload, count, alphabet))
    for name, (symbols, alphabet) in layout.streams.items():
        sections.append(Section(name, *encode_symbols(symbols, alphabet), int(symbols.size), alphabet))
    fields.update(codebook={"dtype": "float16", "shape": list(codebook.shape)}, layout="bitmap", index_bits=None,
                  nnz=int(positions.size), entries=int(positions.size))
    entry = {"name": "w", "dtype": "float32", "shape": list(weight.shape), "kind": "quantized", **fields}
    header = {"format": "deepshrink-dsz", "version": version}
    if version == 3:
        return pack_file(ModelInfo(arch="x"), [(entry, sections)])
    # a version-2 file with a bitmap entry, as no writer makes it
    blob = pack_file(ModelInfo(arch="x"), [(entry, sections)])
    return edit_header(blob, lambda h: h.update(header))


def _weight(shape, density: float, k: int = 6, seed: int = 0, per_channel: bool = False):
    g = torch.Generator().manual_seed(seed)
    rows = shape[0] if per_channel else 1
    cb = (torch.randn(rows, k, generator=g) * 0.1).half().float()
    cb = torch.where(cb == 0, torch.full_like(cb, 0.5), cb)
    n = math.prod(shape)
    idx = torch.randint(0, k, (n,), generator=g)
    row = torch.arange(n) // max(1, n // rows) if per_channel else torch.zeros(n, dtype=torch.long)
    keep = torch.rand(n, generator=g) < density
    w = torch.where(keep, cb[row, idx], torch.zeros(())).reshape(shape)
    return w, (cb if per_channel else cb[0].clone())


def _round_trip(w: torch.Tensor, cb: torch.Tensor) -> None:
    blob = _bitmap_file(w, cb)
    assert split_file(blob)[0]["tensors"][0]["layout"] == "bitmap"
    state = decode_blob(blob)
    assert _bits_equal(state["w"], w)
    assert _bits_equal(state["w_codebook"], cb)


# ------------------------------------------------------------------ bitmap layout round trips

def _set(w: torch.Tensor, cells, value: float) -> torch.Tensor:
    w = w.clone()
    for c in cells:
        w[c] = value
    return w


@pytest.mark.parametrize("case", ["one_nonzero_first", "one_nonzero_last", "all_ones", "empty_rows",
                                  "one_element", "one_row", "one_column", "wide_rows", "per_channel",
                                  "dead_columns"])
def test_bitmap_round_trips_edge_cases(case):
    cb = torch.tensor([0.25, -0.5, 1.5])
    if case == "one_nonzero_first":
        w = _set(torch.zeros(40, 30), [(0, 0)], -0.5)
    elif case == "one_nonzero_last":
        w = _set(torch.zeros(40, 30), [(39, 29)], 1.5)
    elif case == "all_ones":                                     # fully dense: every bit a 1
        w, cb = _weight((12, 9), 1.0)
    elif case == "empty_rows":                                   # rows 0-4 and 10-19 hold nothing
        w, cb = _weight((20, 50), 0.3)
        w[:5] = 0
        w[10:] = 0
    elif case == "one_element":
        w = torch.tensor([1.5])
    elif case == "one_row":
        w, cb = _weight((1, 3000), 0.02)
    elif case == "one_column":
        w, cb = _weight((500, 1), 0.1)
    elif case == "wide_rows":                                    # a row takes more than one decoding step
        w, cb = _weight((3, CHUNK + 517), 0.001)
    elif case == "per_channel":
        w, cb = _weight((16, 8, 3, 3), 0.2, per_channel=True)
    else:                                                        # whole input columns pruned in every row
        w, cb = _weight((64, 100), 0.3)
        w[:, ::3] = 0
    assert int((w != 0).sum()) > 0
    _round_trip(w, cb)


@pytest.mark.timeout(120)
def test_bitmap_with_the_most_rows_round_trips():
    w = torch.zeros(1 << 16, 1)
    w[[0, 12345, (1 << 16) - 1]] = 0.5
    _round_trip(w, torch.tensor([0.5]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 80), st.sampled_from([0.001, 0.02, 0.2, 0.6, 0.97]),
       st.integers(1, 20), st.booleans(), st.integers(0, 2**31))
def test_bitmap_round_trips_random_tensors(rows, cols, density, k, per_channel, seed):
    w, cb = _weight((rows, cols), density, k, seed, per_channel)
    if not bool((w != 0).any()):                                  # one nonzero, from its row's table
        at = seed % w.numel()
        w = w.clone()
        w.view(-1)[at] = cb[at // cols, 0] if per_channel else cb[0]
    _round_trip(w, cb)


def test_adaptive_coder_matches_its_probabilities():
    """The payload is within a few words of sum(-log2 p) over the bits, p as the spec computes it."""
    rng = np.random.default_rng(3)
    m = rng.random((200, 150)) < np.linspace(0.001, 0.4, 150)    # columns of very different densities
    pos = np.flatnonzero(m)
    payload = adaptive_encode(pos, *m.shape)
    counts = np.vstack([np.zeros((1, 150), dtype=np.int64), np.cumsum(m, axis=0)[:-1]])
    ones = np.concatenate([[0], np.cumsum(m.sum(axis=1))[:-1]])[:, None]
    p = probabilities(counts, ones, np.arange(200)[:, None], 150)
    assert p.min() > 0 and p.max() < 1
    ideal = -np.where(m, np.log2(p), np.log2(1 - p)).sum() / 8
    assert ideal <= len(payload) <= ideal + 16
    # spec formula, with Python ints and one float division
    i, j = 57, 33
    c, g = int(counts[i, j]), int(ones[i, 0])
    assert p[i, j] == float(2 * c * (i * 150 + 1) + 16 * g + 8) / float(2 * (i + 8) * (i * 150 + 1))
    got = np.concatenate([q for q, _ in adaptive_decode(payload, 200, 150, pos.size, "m")])
    assert np.array_equal(got, pos)


def test_writer_picks_the_bitmap_only_where_it_is_smaller():
    # dead input columns: the bitmap learns them, the relative index pays for them in every row
    w, cb = _weight((300, 400), 0.15, seed=1)
    w[:, torch.randperm(400, generator=torch.Generator().manual_seed(2))[:300]] = 0
    pos, codes = codes_of("w", w, cb)
    lay = choose_layout(pos, codes, cb.numel(), tuple(w.shape))
    old = choose_layout(pos, codes, cb.numel(), tuple(w.shape), bitmap=False)
    assert lay.name == "bitmap" and lay.estimate() < 0.9 * old.estimate()
    # evenly pruned: no column pattern to learn, the relative index (b = 0 here) stays
    w, cb = _weight((300, 400), 0.05, seed=3)
    pos, codes = codes_of("w", w, cb)
    assert choose_layout(pos, codes, cb.numel(), tuple(w.shape)).name == "relative"


def test_version_3_is_never_larger_than_version_2():
    torch.manual_seed(0)
    model = quantize_like_kmeans(nn.Sequential(nn.Linear(200, 64), nn.Linear(64, 10)), bits=4, sparsity=0.9)
    with torch.no_grad():                                          # dead inputs in the first layer
        model[0].weight[:, 50:150] = 0
        model[0].weight_mask.copy_(model[0].weight != 0)
    info = ModelInfo(arch="seq", history=[{"op": "train", "config": {"epochs": 10, "lr": 0.05}}])
    v2, v3 = dumps(model, info, version=2), dumps(model, info)
    assert len(v3) < len(v2)
    layouts = [e.get("layout") for e in split_file(v3)[0]["tensors"]]
    assert "bitmap" in layouts and "bitmap" not in [e.get("layout") for e in split_file(v2)[0]["tensors"]]
    a, b = decode_blob(v2), decode_blob(v3)
    assert list(a) == list(b) and all(_bits_equal(a[k], b[k]) for k in a)
    report = report_from_bytes(v3)
    row = next(r for r in report.rows if r.layout == "bitmap")
    assert row.index_bytes == split_file(v3)[0]["tensors"][0]["sections"]["mask"]["length"]


# ------------------------------------------------------------------ version-2 files

def test_committed_version_2_file_loads_bit_for_bit():
    blob = (FIXTURES / "v2_mixed.dsz").read_bytes()
    assert PREAMBLE.unpack_from(blob)[1:3] == (2, FLAG_ZLIB_HEADER)
    header, _ = split_file(blob)
    assert {e.get("layout") for e in header["tensors"]} == {None, "relative", "csr"}
    expected = json.loads((FIXTURES / "v2_mixed.json").read_text())
    state = decode_blob(blob)
    assert sorted(state) == sorted(expected)
    for name, (dtype, shape, digest) in expected.items():
        t = state[name]
        assert str(t.dtype).removeprefix("torch.") == dtype and list(t.shape) == shape, name
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert hashlib.sha256(raw).hexdigest() == digest, name
    assert parse_file(blob, "v2").version == 2


def test_version_2_writer_is_the_old_writer():
    """The fixture's model, re-encoded with ``version=2``, gives the committed bytes back; version 3
    reads the same tensors from a smaller file."""
    import sys
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_v2_fixture import build
    finally:
        sys.path.remove(str(FIXTURES))
    old = (FIXTURES / "v2_mixed.dsz").read_bytes()
    model = build()                                  # the fixture's structure, bits and buffers ...
    model.load_state_dict(decode_blob(old))          # ... and its tensors (biases came from torch's RNG)
    info = parse_file(old, "v2").info
    assert dumps(model, info, version=2) == old
    v3 = dumps(model, info)
    assert PREAMBLE.unpack_from(v3)[1] == 3 and len(v3) < len(old)
    a, b = decode_blob(old), decode_blob(v3)
    assert all(_bits_equal(a[k], b[k]) for k in a)


def test_version_2_may_not_use_version_3_features():
    w, cb = _weight((20, 30), 0.2)
    with pytest.raises(FormatError, match="layout"):
        decode_blob(_bitmap_file(w, cb, version=2))
    with pytest.raises(ValueError, match="version 3"):
        fields, sections = encode_quantized("w", w, cb, 4)
        pack_file(ModelInfo(arch="x"), [({"name": "w", "dtype": "float32", "shape": [20, 30], "kind": "quantized",
                                          **fields, "layout": "bitmap"}, sections)], version=2)
    # a version-2 preamble with a dictionary header: the plain inflater has no dictionary
    blob = dumps(quantize_like_kmeans(nn.Linear(8, 4)), ModelInfo(arch="x"))
    hlen = PREAMBLE.unpack_from(blob)[3]
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    text = zlib.decompressobj(zdict=HEADER_DICT).decompress(head).replace(b'"version":3', b'"version":2', 1)
    head = compress_header(text, 3)
    forged = PREAMBLE.pack(MAGIC, 2, 1, len(head), zlib.crc32(head)) + head + blob[PREAMBLE.size + hlen:]
    with pytest.raises(FormatError, match="header zlib stream is corrupt"):
        decode_blob(forged)


def test_preamble_and_header_versions_must_agree():
    blob = dumps(quantize_like_kmeans(nn.Linear(8, 4)), ModelInfo(arch="x"))
    with pytest.raises(FormatError, match="header zlib stream"):        # v2 reading a v3 header
        decode_blob(blob[:8] + b"\x02\x00" + blob[10:])
    header, data = split_file(blob)
    header["version"] = 2
    text = json.dumps(header, separators=(",", ":")).encode()
    plain = PREAMBLE.pack(MAGIC, 3, 0, len(text), zlib.crc32(text)) + text + data
    with pytest.raises(FormatError, match="'version' is 2, the preamble says 3"):
        decode_blob(plain)
    with pytest.raises(FormatError, match="unsupported .dsz version 4"):
        decode_blob(blob[:8] + b"\x04\x00" + blob[10:])


# ------------------------------------------------------------------ the header dictionary

def test_dictionary_is_fixed_and_in_the_spec():
    assert (len(HEADER_DICT), zlib.adler32(HEADER_DICT), zlib.crc32(HEADER_DICT)) == (
        HEADER_DICT_SIZE, HEADER_DICT_ADLER32, HEADER_DICT_CRC32)
    spec = (REPO / "docs" / "FORMAT.md").read_text()
    block = spec[spec.index("## Appendix A."):]
    lines = re.search(r"```\n(.*?)\n```", block, re.S).group(1).split("\n")
    assert tuple(lines) == DICT_LINES
    sums = f"{HEADER_DICT_SIZE:,} bytes, Adler-32 `0x{HEADER_DICT_ADLER32:08X}`, CRC-32 `0x{HEADER_DICT_CRC32:08X}`"
    assert sums in spec


def test_dictionary_header_is_smaller_and_flagged():
    model = quantize_like_kmeans(nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 5)))
    info = ModelInfo(arch="lenet300", history=[{"op": "train", "config": {"epochs": 10, "batch_size": 128}}])
    blob = dumps(model, info)
    _, version, flags, hlen, _ = PREAMBLE.unpack_from(blob)
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    assert (version, flags) == (3, FLAG_ZLIB_HEADER)
    assert head[1] & 0x20 and head[2:6] == HEADER_DICT_ADLER32.to_bytes(4, "big")
    text = zlib.decompressobj(zdict=HEADER_DICT).decompress(head)
    assert len(head) < len(zlib.compress(text, 9))


def _with_head(blob: bytes, head: bytes, flags: int = FLAG_ZLIB_HEADER, version: int = 3) -> bytes:
    hlen = PREAMBLE.unpack_from(blob)[3]
    return PREAMBLE.pack(MAGIC, version, flags, len(head), zlib.crc32(head)) + head + blob[PREAMBLE.size + hlen:]


@pytest.fixture(scope="module")
def v3_blob() -> bytes:
    return dumps(quantize_like_kmeans(nn.Sequential(nn.Linear(40, 16), nn.Linear(16, 4)), sparsity=0.9),
                 ModelInfo(arch="seq"))


def _text(blob: bytes) -> bytes:
    hlen = PREAMBLE.unpack_from(blob)[3]
    return zlib.decompressobj(zdict=HEADER_DICT).decompress(blob[PREAMBLE.size:PREAMBLE.size + hlen])


def test_header_without_the_dictionary_is_refused(v3_blob):
    text = _text(v3_blob)
    with pytest.raises(FormatError, match="preset dictionary"):           # plain zlib in a v3 file
        decode_blob(_with_head(v3_blob, zlib.compress(text, 9)))
    other = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT[:-1])
    with pytest.raises(FormatError, match="preset dictionary"):           # another dictionary's DICTID
        decode_blob(_with_head(v3_blob, other.compress(text) + other.flush()))
    with pytest.raises(FormatError, match="preset dictionary"):
        decode_blob(_with_head(v3_blob, b"\x78"))


@pytest.mark.timeout(120)
def test_truncated_and_corrupt_dictionary_headers(v3_blob):
    head = compress_header(_text(v3_blob))
    for n in range(len(head)):                                            # every truncation of the stream
        with pytest.raises(FormatError, match="header"):
            decode_blob(_with_head(v3_blob, head[:n]))
    rng = np.random.default_rng(0)
    for _ in range(300):                                                  # flips with the CRC fixed
        bad = bytearray(head)
        at = int(rng.integers(0, len(bad)))
        bad[at] ^= 1 << int(rng.integers(0, 8))
        try:
            decode_blob(_with_head(v3_blob, bytes(bad)))
        except FormatError:
            pass                                                          # anything else fails the test
    with pytest.raises(FormatError, match="trailing"):
        decode_blob(_with_head(v3_blob, head + b"\x00"))
    with pytest.raises(FormatError, match="CRC"):
        blob = _with_head(v3_blob, head)
        decode_blob(blob[:PREAMBLE.size + 7] + bytes([blob[PREAMBLE.size + 7] ^ 1]) + blob[PREAMBLE.size + 8:])
    for n in range(PREAMBLE.size + len(head) + 1):                        # every truncation of the file's start
        with pytest.raises(FormatError):
            decode_blob(_with_head(v3_blob, head)[:n])


@pytest.mark.timeout(60)
def test_header_bomb_with_the_dictionary_is_refused(v3_blob):
    """A 100 kB stream that inflates to ~100 MB of JSON: stopped at the file's limit, not inflated."""
    text = _text(v3_blob)
    junk = text.replace(b'"extra":{}', b'"extra":{"junk":"' + b"a" * (100 << 20) + b'"}', 1)
    head = compress_header(junk)
    assert len(head) < 200_000
    blob = _with_head(v3_blob, head)
    limit = min(64 << 20, element_limit(len(blob)) // HEADER_UNITS)
    with pytest.raises(FormatError, match=f"inflates past {limit} bytes"):
        decode_blob(blob)
    with pytest.raises(FormatError, match="inflates past"):               # same with a caller's lower limit
        decode_blob(_with_head(v3_blob, compress_header(text)), max_elements=HEADER_UNITS * 100)


def test_header_that_fits_inflates(v3_blob):
    # the same header text, stored plain (flags 0): the reader reads both alike
    plain = _with_head(v3_blob, _text(v3_blob), flags=0)
    a, b = decode_blob(plain), decode_blob(v3_blob)
    assert list(a) == list(b) and all(_bits_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ broken bitmap entries

@pytest.fixture(scope="module")
def bitmap_blob() -> bytes:
    w, cb = _weight((30, 40), 0.1, seed=5)
    w[:, :10] = 0
    return _bitmap_file(w, cb)


def _edit_entry(blob: bytes, **fields) -> bytes:
    return edit_header(blob, lambda h: h["tensors"][0].update(fields))


@pytest.mark.parametrize("fields, match", [
    ({"index_bits": 3}, "index_bits null"),
    ({"nnz": 0, "entries": 0}, "nnz == entries >= 1"),
    ({"entries": 10**6}, "entries"),
    ({"shape": [70000, 1]}, "at most 65536 rows"),
    ({"shape": [0, 40], "nnz": 0, "entries": 0}, "1 to 2\\^40 elements"),
    ({"layout": "bitmaps"}, "layout"),
])
def test_bad_bitmap_fields(bitmap_blob, fields, match):
    with pytest.raises(FormatError, match=match):
        decode_blob(_edit_entry(bitmap_blob, **fields))


def test_bad_bitmap_sections(bitmap_blob):
    def sec(fn):
        return edit_header(bitmap_blob, lambda h: fn(h["tensors"][0]["sections"]))

    with pytest.raises(FormatError, match="w/mask.*'coder' 'ans' not allowed"):
        decode_blob(sec(lambda s: s["mask"].update(coder="ans")))
    with pytest.raises(FormatError, match="w/mask.*count"):
        decode_blob(sec(lambda s: s["mask"].update(count=5)))
    with pytest.raises(FormatError, match="w/mask.*alphabet"):
        decode_blob(sec(lambda s: s["mask"].update(alphabet=3)))
    with pytest.raises(FormatError, match="sections"):
        decode_blob(sec(lambda s: s.pop("mask")))


def _mask_payload(blob: bytes, fn) -> bytes:
    """The file with its mask section's payload replaced by ``fn(payload)``, sections retiled."""
    header, data = split_file(blob)
    out, cursor = b"", 0
    for e in header["tensors"]:
        for name, s in e["sections"].items():
            piece = data[s["offset"]:s["offset"] + s["length"]]
            if e is header["tensors"][0] and name == "mask":
                piece = fn(piece)
            s["offset"], s["length"] = cursor, len(piece)
            out += piece
            cursor += len(piece)
    header["data_size"] = cursor
    return reseal(_join(header, out))


def test_broken_adaptive_streams(bitmap_blob):
    nnz = split_file(bitmap_blob)[0]["tensors"][0]["nnz"]
    with pytest.raises(FormatError, match="w/mask.*multiple of 4"):
        decode_blob(_mask_payload(bitmap_blob, lambda p: p[:-1]))
    with pytest.raises(FormatError, match="w/mask.*multiple of 4"):
        decode_blob(_mask_payload(bitmap_blob, lambda p: b""))
    with pytest.raises(FormatError, match="w/mask"):
        decode_blob(_mask_payload(bitmap_blob, lambda p: p + b"\x01\x00\x00\x00"))     # data left, or wrong bits
    more = np.arange(0, 30 * 40, 7)                                       # another bitmap, more ones
    assert more.size > nnz
    with pytest.raises(FormatError, match=f"w/mask.*more than the {nnz} nonzeros"):
        decode_blob(_mask_payload(bitmap_blob, lambda p: adaptive_encode(more, 30, 40)))
    with pytest.raises(FormatError, match=f"w/mask.*holds {nnz - 1} nonzeros, the header declares {nnz}"):
        fewer = np.flatnonzero(decode_blob(bitmap_blob)["w"].reshape(-1))[1:]
        decode_blob(_mask_payload(bitmap_blob, lambda p: adaptive_encode(fewer, 30, 40)))
    rng = np.random.default_rng(1)
    for _ in range(200):                                                  # flips behind fixed CRCs
        def flip(p, at=int(rng.integers(0, 10**6)), bit=int(rng.integers(0, 8))):
            b = bytearray(p)
            b[at % len(b)] ^= 1 << bit
            return bytes(b)
        try:
            state = decode_blob(_mask_payload(bitmap_blob, flip))
        except FormatError:
            continue
        assert int((state["w"] != 0).sum()) == nnz                        # decoded: still nnz nonzeros


def test_decoding_a_bitmap_stops_at_the_first_excess_nonzero():
    pos = np.arange(0, 5000, 7)
    payload = adaptive_encode(pos, 50, 100)
    seen = []
    with pytest.raises(FormatError, match="more than the 10 nonzeros"):
        for p, _ in adaptive_decode(payload, 50, 100, 10, "m"):
            seen.append(p.size)
    assert sum(seen) <= 10


def test_bitmap_entry_weighs_its_column_counts_not_its_mask(bitmap_blob):
    e = parse_file(bitmap_blob, "t").entries[0]
    n, q, nnz, k = 30 * 40, 40, e["nnz"], 6
    assert entry_units(e) == ENTRY_UNITS + -(-(4 * n + (2 + 4) * k + nnz * 1 + 8 * q) // 4)
    with pytest.raises(FormatError, match="limit"):
        decode_blob(bitmap_blob, max_elements=entry_units(e) - 1)
