"""What a .dsz file may make the reader allocate (docs/FORMAT.md §5).

The guarantee: no file under 1 MB makes ``load_compressed`` (default limits) exceed 256 MB of peak
memory; a hostile file ends in a FormatError or ModelError. Checked on the audit's repros and on
files built to sit at the limit of a 1 MiB file (tests/codec/dsz_bombs.py), each loaded in a fresh
subprocess that reports the growth of its peak RSS. Then the pieces: what each entry weighs, the
header's share, the architecture's share, narrow symbol types, bounded inflation.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.codec import dumps, loads
from deepshrink.codec.container import (ELEMENTS_FLOOR, ELEMENTS_PER_BYTE, HEADER_UNITS, MAX_ELEMENTS, element_limit,
                                        pack_file, parse_file)
from deepshrink.codec.model_io import check_arch
from deepshrink.codec.entropy import decode_bytes, decode_symbols, encode_symbols
from deepshrink.codec.schema import ENTRY_UNITS, entry_units
from deepshrink.errors import FormatError, ModelError
from deepshrink.io import ModelInfo

from codec_helpers import decode_blob, quantize_like_kmeans, split_file
from dsz_bombs import _dense, _raw_zeros, _zeros_zlib, audit_bombs, codebook_bomb, header_bomb, limit_bombs, measure

PEAK = 256_000_000                     # bytes: 256 MB
ONE_MB = 1_000_000

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc")


def _load_all(tmp_path, files: dict[str, bytes]) -> dict[str, tuple[int, int, str]]:
    paths = []
    for i, (name, blob) in enumerate(files.items()):
        assert len(blob) < 1 << 20, (name, len(blob))
        paths.append(tmp_path / f"{i}.dsz")
        paths[-1].write_bytes(blob)
    return dict(zip(files, measure(paths)))


@needs_linux
@pytest.mark.timeout(120)
def test_audit_repros_refused_before_allocating(tmp_path):
    """A 531 kB file with a (4096, 65536) zlib'd codebook, 2^28 const codes in 38 kB, four
    float64 masks of a 2^24-element weight, 512 MiB of zlib'd float64 zeros, and a 60 kB header
    inflating to 60 MB of JSON: before the fix, +2.5, +8.3, +0.6, +1.0 and +1.5 GiB."""
    files = {**audit_bombs(), "header of 20M []": header_bomb(0, items=20_000_000)}
    for name, (delta, peak, outcome) in _load_all(tmp_path, files).items():
        assert outcome.startswith("FormatError") and "limit" in outcome, (name, outcome)
        assert delta < PEAK and peak < 64 << 20, (name, delta, peak)


@needs_linux
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_files_at_the_limit_stay_under_256_mb(tmp_path):
    """Every kind of allocation pushed to the limit of a 1 MiB file: decoded tensors, codebooks,
    masks, zlib'd raw tensors, a file that loads into a resized model, an architecture widened by
    its kwargs, header JSON (parsed, it is ~48 bytes a byte), thousands of entries."""
    results = _load_all(tmp_path, limit_bombs((1 << 20) - 1))
    for name, (delta, peak, outcome) in results.items():
        assert delta < PEAK and peak < PEAK, (name, delta, peak)
        assert outcome.startswith(("FormatError", "ModelError")) or (outcome == "loaded" and "loads" in name), \
            (name, outcome)
    assert max(peak for _, peak, _ in results.values()) > 100 << 20      # the files do reach the limit


@needs_linux
@pytest.mark.timeout(120)
def test_worst_files_at_the_limit_stay_under_256_mb(tmp_path):
    """The slow test's heaviest cases, by default: a raw tensor that loads into a resized model
    (decoded + the model's copy) and a header of nested lists."""
    files = limit_bombs((1 << 20) - 1)
    results = _load_all(tmp_path, {k: files[k] for k in ("lenet300 raw names, loads", "header junk nested []")})
    for name, (delta, peak, outcome) in results.items():
        assert delta < PEAK and peak < PEAK, (name, delta, peak)
    assert results["lenet300 raw names, loads"][2] == "loaded"


# ------------------------------------------------------------------------- the rule

def test_element_limit():
    assert element_limit(0) == ELEMENTS_FLOOR == 1 << 22
    assert element_limit(ONE_MB) == ELEMENTS_FLOOR + ELEMENTS_PER_BYTE * ONE_MB < 26_000_000
    assert element_limit(10**9) == MAX_ELEMENTS
    assert element_limit(10**9, max_elements=7) == 7 and element_limit(10, max_elements=1 << 30) == 1 << 30


def test_what_each_entry_weighs():
    def units(fields: dict, sections: list) -> int:
        return entry_units(split_file(pack_file(ModelInfo(arch="x"), [(fields, sections)]))[0]["tensors"][0])

    n = 1000
    assert units(*_raw_zeros("r", n, "float32")) == ENTRY_UNITS + n
    assert units(*_raw_zeros("r", n, "bool")) == ENTRY_UNITS + n // 4
    assert units(*_raw_zeros("r", n, "float64")) == ENTRY_UNITS + 2 * n
    assert units({"name": "m", "dtype": "float64", "shape": [n], "kind": "mask", "source": "w"}, []) \
        == ENTRY_UNITS + 2 * n
    assert units({"name": "m", "dtype": "bool", "shape": [n], "kind": "mask", "source": "w"}, []) \
        == ENTRY_UNITS + n // 4
    # dense quantized: weight 4n, codebook (4 + 4) K, n codes of one byte
    assert units(*_dense("q", n)) == ENTRY_UNITS + math.ceil((4 * n + 8 + n) / 4)


def test_codebooks_count():
    rows, k = 64, 4096
    blob = codebook_bomb(rows=rows, k=k)
    parsed = parse_file(blob, "t.dsz")
    # (2 + 4) bytes a codebook entry: stored float16 and decoded float32
    assert parsed.units - parsed.header_units == ENTRY_UNITS + math.ceil((4 * rows + 6 * rows * k) / 4)
    assert len(blob) < 2000
    with pytest.raises(FormatError, match="limit"):
        parse_file(codebook_bomb(rows=1024, k=4096), "t.dsz")


def test_header_counts():
    blob = dumps(quantize_like_kmeans(models.build("lenet300")), ModelInfo(arch="lenet300"))
    parsed = parse_file(blob, "t.dsz")
    text = json.dumps(split_file(blob)[0], separators=(",", ":"))
    assert parsed.header_units == HEADER_UNITS * len(text)
    assert parsed.units == parsed.header_units + sum(entry_units(e) for e in parsed.entries)
    with pytest.raises(FormatError, match="header inflates past"):
        parse_file(blob, "t.dsz", max_elements=HEADER_UNITS * len(text) - 1)


def test_explicit_limit_trusts_a_file():
    blob = pack_file(ModelInfo(arch="x"), [_dense("w", 5 << 20)])
    with pytest.raises(FormatError, match="limit"):
        decode_blob(blob)
    w = decode_blob(blob, max_elements=1 << 24)["w"]
    assert w.shape == (5 << 20,) and bool((w == 0.5).all())


def test_file_past_the_default_limit_is_written_and_loads_when_trusted():
    """5 M weights at 99.9% sparsity: a ~10 kB file, ~2000x smaller; too much for its size by
    default, written all the same, loaded with an explicit limit."""
    torch.manual_seed(0)
    model = quantize_like_kmeans(nn.Sequential(nn.Linear(2500, 2000, bias=False)), bits=4, sparsity=0.999,
                                 keep_mask=False)
    blob = dumps(model, ModelInfo(arch="x"))
    assert len(blob) < 20_000
    with pytest.raises(FormatError, match=r"limit .*\(max_elements raises it"):
        decode_blob(blob)
    assert torch.equal(decode_blob(blob, max_elements=MAX_ELEMENTS)["0.weight"], model[0].weight)


def test_highly_compressed_model_loads_by_default():
    """5 M weights at 95% sparsity, 4-bit codes: past the flat floor, ~60x smaller than fp32."""
    torch.manual_seed(0)
    model = quantize_like_kmeans(nn.Sequential(nn.Linear(2500, 2000, bias=False)), bits=4, sparsity=0.95)
    blob = dumps(model, ModelInfo(arch="x"))
    assert 4 * 5_000_000 / len(blob) > 55 and 5_000_000 > ELEMENTS_FLOOR
    assert torch.equal(decode_blob(blob)["0.weight"], model[0].weight)


# ------------------------------------------------------------------------- the architecture's share

def test_architecture_counts_toward_the_limit():
    wide = ModelInfo(arch="lenet300", kwargs={"in_features": 20_000})      # 6 M elements
    blob = dumps(quantize_like_kmeans(models.build("lenet300")), wide)
    with pytest.raises(ModelError, match="architecture 'lenet300'.*limit"):
        loads(blob)


def test_wider_types_in_the_architecture_count():
    """fc3.bias stored as float16 is copied into the model's float32 bias: 10 x 2 more bytes."""
    model = quantize_like_kmeans(models.build("lenet300"))
    model.fc3.bias.data = model.fc3.bias.data.half()
    blob = dumps(model, ModelInfo(arch="lenet300"))
    units = parse_file(blob, "t.dsz").units
    check_arch(parse_file(blob, "t.dsz", max_elements=units + 5))
    with pytest.raises(ModelError, match="wider types"):
        check_arch(parse_file(blob, "t.dsz", max_elements=units + 4))


# ------------------------------------------------------------------------- decoders

@pytest.mark.parametrize("alphabet, dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                             (65537, np.uint32), (1 << 40, np.uint32)])
def test_symbols_decode_to_the_narrowest_type(alphabet, dtype):
    rng = np.random.default_rng(0)
    sym = rng.integers(0, min(alphabet, 1 << 32), 500)
    sym[:3] = [0, min(alphabet, 1 << 32) - 1, 1]
    coders = ["const", "raw", "huffman", "ans"] if alphabet <= 1 << 16 else ["const", "raw"]
    for only in coders:
        stream = np.full(500, sym[1]) if only == "const" else sym
        if only == "raw" and alphabet > 1 << 32:
            continue
        coder, payload = encode_symbols(stream, alphabet, only=only)
        out = decode_symbols(coder, payload, stream.size, alphabet, "t")
        assert out.dtype == dtype and np.array_equal(out, stream), only


def test_const_symbol_outside_the_alphabet_is_refused_before_allocating():
    with pytest.raises(FormatError, match="t/codes: symbol outside"):
        decode_symbols("const", (5).to_bytes(4, "little"), 1 << 45, 3, "t/codes")      # 32 TiB if allocated


def test_zlib_inflates_into_one_buffer_and_stops_at_count():
    payload = _zeros_zlib(1 << 30)
    with pytest.raises(FormatError, match="exactly 1000 bytes"):
        decode_bytes("zlib", payload, 1000, "t")
    out = decode_bytes("zlib", _zeros_zlib(3_000_001), 3_000_001, "t")
    assert isinstance(out, bytearray) and out == bytes(3_000_001)
    truncated = _zeros_zlib(3_000_001)[:-10]
    with pytest.raises(FormatError, match="exactly"):
        decode_bytes("zlib", truncated, 3_000_001, "t")
