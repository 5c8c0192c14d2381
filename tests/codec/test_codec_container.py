"""The .dsz container: golden bytes, and every kind of bad input -> FormatError naming the spot.

The bad-input list of issue #7: every truncation, random byte flips (with and without the CRCs
fixed up, so the decoders' own checks are reached), a huge declared length in a tiny file, a deeply
nested header, overlapping or out-of-range offsets, incomplete or over-subscribed Huffman tables,
relative indices running past the tensor. Each case is a small file, so each error comes at once;
the loops carry a pytest timeout rather than a timing assertion.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from deepshrink.codec import dumps
from deepshrink.codec.container import MAGIC, PREAMBLE, pack_file, parse_file
from deepshrink.codec.header_dict import HEADER_DICT
from deepshrink.codec.quantized import Section
from deepshrink.codec.tables import encode_table
from deepshrink.errors import FormatError
from deepshrink.io import ModelInfo

from codec_helpers import _join, decode_blob, edit_header, quantize_like_kmeans, reseal, split_file, tiny_model

GOLDEN_HEADER_V2 = (
    '{"format":"deepshrink-dsz","version":2,"data_size":23,"model":{"format":"deepshrink-model","version":1,'
    '"arch":"tiny","kwargs":{},"input_shape":[8],"mean":null,"std":null,"accuracy":null,"data":null,'
    '"history":[],"extra":{}},"tensors":[{"name":"fc.weight","dtype":"float32","shape":[2,8],"kind":"quantized",'
    '"codebook":{"dtype":"float16","shape":[2]},"bits":1,"layout":"relative","index_bits":3,"nnz":4,'
    '"entries":4,"plain":{"index_bits":2,"bits":15},"sections":{"codebook":{"offset":0,"length":4,'
    '"crc32":3406901582,"coder":"bytes","count":4,"alphabet":256},"codes":{"offset":4,"length":1,'
    '"crc32":1540473965,"coder":"raw","count":4,"alphabet":3},"index":{"offset":5,"length":2,'
    '"crc32":806439886,"coder":"raw","count":4,"alphabet":8}}},{"name":"fc.bias","dtype":"float32",'
    '"shape":[2],"kind":"raw","sections":{"data":{"offset":7,"length":8,"crc32":3280414294,"coder":"bytes",'
    '"count":8,"alphabet":256}}},{"name":"fc.weight_mask","dtype":"bool","shape":[2,8],"kind":"mask",'
    '"source":"fc.weight","sections":{}},{"name":"out.weight","dtype":"float32","shape":[1,2],"kind":"raw",'
    '"sections":{"data":{"offset":15,"length":8,"crc32":847875404,"coder":"bytes","count":8,"alphabet":256}}}]}')
# the version-3 writer's header: the same JSON but for the version (the tiny layer keeps the relative layout)
GOLDEN_HEADER = GOLDEN_HEADER_V2.replace('"version":2', '"version":3', 1)
# fp16 codebook [-0.25, 0.5] | codes 2,1,2,1 in 2 bits | gaps 0,2,3,6 in 3 bits | bias 1,-2 | out 3,0
GOLDEN_DATA = "00b40038" "99" "09e0" "0000803f000000c0" "0000404000000000"


@pytest.fixture(scope="module")
def tiny_blob() -> bytes:
    return dumps(tiny_model(), ModelInfo(arch="tiny", input_shape=[8]))


@pytest.fixture(scope="module")
def coded_blob() -> bytes:
    """A file whose sections use Huffman and ANS (skewed codes) as well as raw/const."""
    torch.manual_seed(0)
    model = quantize_like_kmeans(nn.Sequential(nn.Linear(96, 48), nn.Linear(48, 10)), bits=3, sparsity=0.7)
    with torch.no_grad():
        w = model[0].weight                                  # skewed codes: mostly the first entry
        cb = model[0].weight_codebook
        w.copy_(torch.where((w != 0) & (torch.rand(w.shape) < 0.8), cb[0], w))
        model[0].weight_mask.copy_(w != 0)
        # dense layer with dyadic code frequencies 1/2, 1/4, 1/8, 1/8: Huffman meets the bound
        cb = model[1].weight_codebook
        codes = torch.tensor([0] * 240 + [1] * 120 + [2] * 60 + [3] * 60)[torch.randperm(480)]
        model[1].weight.copy_(cb[codes].view(10, 48))
        model[1].weight_mask.fill_(True)
    blob = dumps(model, ModelInfo(arch="seq"))
    coders = {s["coder"] for e in split_file(blob)[0]["tensors"] for s in e["sections"].values()}
    assert {"huffman", "ans"} <= coders, coders
    return blob


# ------------------------------------------------------------------------- golden bytes

def test_golden_bytes(tiny_blob):
    magic, version, flags, hlen, hcrc = PREAMBLE.unpack_from(tiny_blob)
    assert (magic, version, flags) == (MAGIC, 3, 1)          # header stored zlib-compressed
    head = tiny_blob[PREAMBLE.size:PREAMBLE.size + hlen]
    assert zlib.crc32(head) == hcrc
    assert zlib.decompressobj(zdict=HEADER_DICT).decompress(head).decode() == GOLDEN_HEADER
    assert tiny_blob[PREAMBLE.size + hlen:].hex() == GOLDEN_DATA


@pytest.mark.parametrize("version, text", [(2, GOLDEN_HEADER_V2), (3, GOLDEN_HEADER)])
def test_golden_file_decodes(version, text):
    """The reader, pinned by files written out by hand (uncompressed header, flags 0), of both versions."""
    head = text.encode()
    blob = struct.pack("<8sHHII", MAGIC, version, 0, len(head), zlib.crc32(head)) + head + bytes.fromhex(GOLDEN_DATA)
    state = decode_blob(blob)
    ref = tiny_model().state_dict()
    assert list(state) == ["fc.weight", "fc.weight_codebook", "fc.bias", "fc.weight_mask", "out.weight"]
    for k, v in ref.items():
        assert v.dtype == state[k].dtype and torch.equal(v, state[k]), k


# ------------------------------------------------------------------------- bad input

def expect_format_error(blob: bytes, match: str | None = None) -> str:
    with pytest.raises(FormatError, match=match) as info:
        decode_blob(blob)
    return str(info.value)


@pytest.mark.timeout(60)
def test_every_truncation(tiny_blob, coded_blob):
    for blob in (tiny_blob, coded_blob[:2000]):
        for n in range(len(blob)):
            expect_format_error(blob[:n])


@pytest.mark.timeout(60)
def test_random_byte_flips(coded_blob):
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(coded_blob)
        for i in rng.choice(len(bad), size=int(rng.integers(1, 4)), replace=False):
            bad[i] ^= int(rng.integers(1, 256))
        expect_format_error(bytes(bad))


@pytest.mark.timeout(60)
def test_flips_behind_fixed_crcs_reach_the_decoders(coded_blob):
    """With the CRCs recomputed a flip is either caught by a decoder check or decodes to
    something; never another exception."""
    header, data = split_file(coded_blob)
    start = len(coded_blob) - len(data)
    rng = np.random.default_rng(1)
    caught = 0
    for _ in range(300):
        bad = bytearray(coded_blob)
        bad[start + int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        try:
            decode_blob(reseal(bytes(bad)))
        except FormatError as exc:
            assert "section " in str(exc) or "tensor " in str(exc)
            caught += 1
    assert caught > 50


def test_huge_declared_lengths(tiny_blob):
    bad = bytearray(tiny_blob)
    bad[12:16] = (2**32 - 1).to_bytes(4, "little")           # header length
    expect_format_error(bytes(bad), "header length")

    def grow(shape=None, count=None, length=None):
        def fn(h):
            t = h["tensors"][1]                               # fc.bias, raw
            if shape is not None:
                t["shape"] = shape
            s = t["sections"]["data"]
            s["count"] = count if count is not None else s["count"]
            s["length"] = length if length is not None else s["length"]
        return fn

    expect_format_error(edit_header(tiny_blob, grow(shape=[2**40, 2**40], count=2**82)), "limit")
    expect_format_error(edit_header(tiny_blob, grow(shape=[10**9], count=4 * 10**9)), "limit")
    expect_format_error(edit_header(tiny_blob, grow(count=10**12)), "fc.bias.*count")
    expect_format_error(edit_header(tiny_blob, grow(length=2**62)), "fc.bias/data.*past")
    expect_format_error(edit_header(tiny_blob, lambda h: h.update(data_size=2**60)), "data_size")


def test_limit_on_elements_is_configurable(tiny_blob):
    with pytest.raises(FormatError, match="limit"):
        decode_blob(tiny_blob, max_elements=10)


def test_deeply_nested_header():
    for compress in (False, True):
        deep = {"format": "deepshrink-dsz", "version": 2, "data_size": 0, "tensors": [],
                "model": "@"}
        text = json.dumps(deep).replace('"@"', "[" * 200_000 + "]" * 200_000)
        head = zlib.compress(text.encode()) if compress else text.encode()
        blob = PREAMBLE.pack(MAGIC, 2, int(compress), len(head), zlib.crc32(head)) + head
        expect_format_error(blob, "header")


def test_overlapping_and_out_of_range_offsets(tiny_blob):
    def move(offset):
        def fn(h):
            h["tensors"][1]["sections"]["data"]["offset"] = offset
        return fn

    expect_format_error(edit_header(tiny_blob, move(0)), "fc.bias/data.*overlaps")
    expect_format_error(edit_header(tiny_blob, move(9)), "fc.bias/data.*gap")
    expect_format_error(edit_header(tiny_blob, move(10**15)), "fc.bias/data")
    expect_format_error(edit_header(tiny_blob, move(-1)), "fc.bias/data.*offset")


@pytest.mark.parametrize("change, match", [
    (lambda h: h["tensors"][0].update(layout="coo"), "layout"),
    (lambda h: h["tensors"][0].update(index_bits=40), "index_bits"),
    (lambda h: h["tensors"][0].update(nnz=5), "nnz"),
    (lambda h: h["tensors"][0]["sections"]["codes"].update(coder="lzma"), "fc.weight/codes.*coder"),
    (lambda h: h["tensors"][0]["sections"]["codes"].update(alphabet=9), "fc.weight/codes.*alphabet"),
    (lambda h: h["tensors"][0]["sections"].pop("index"), "sections"),
    (lambda h: h["tensors"][0]["codebook"].update(shape=[3, 2]), "codebook shape"),
    (lambda h: h["tensors"][1].update(dtype="complex64"), "dtype"),
    (lambda h: h["tensors"][1].update(shape=[2, -1]), "shape"),
    (lambda h: h["tensors"][1].update(shape=[1] * 9), "shape"),
    (lambda h: h["tensors"][2].update(source="out.weight"), "source"),
    (lambda h: h["tensors"][3].update(name="fc.bias"), "name"),
    (lambda h: h["tensors"].append(7), "entry"),
    (lambda h: h.update(tensors={}), "tensors"),
    (lambda h: h["model"].update(arch=3), "arch"),
    (lambda h: h.update(version=1), "v3"),
])
def test_inconsistent_header_fields(tiny_blob, change, match):
    expect_format_error(edit_header(tiny_blob, change), match)


def test_preamble_checks(tiny_blob):
    expect_format_error(b"PK\x03\x04" + tiny_blob[4:], "magic")
    expect_format_error(tiny_blob[:8] + b"\x01\x00" + tiny_blob[10:], "version")
    expect_format_error(tiny_blob[:10] + b"\x04\x00" + tiny_blob[12:], "flags")
    expect_format_error(tiny_blob + b"\x00", "data")
    expect_format_error(b"", "too short")


def _file_with_stream(shape, layout_fields, streams: dict[str, tuple[str, bytes, int, int]]) -> bytes:
    """A one-tensor file with hand-made symbol sections: name -> (coder, payload, count, alphabet)."""
    sections = [Section("codebook", "bytes", np.array([1.0, 2.0], dtype=np.float32).tobytes(), 8, 256)]
    sections += [Section(name, *spec) for name, spec in streams.items()]
    entry = {"name": "w", "dtype": "float32", "shape": shape, "kind": "quantized",
             "codebook": {"dtype": "float32", "shape": [2]}, "bits": 1,
             "plain": {"index_bits": 1, "bits": 0}, **layout_fields}
    return pack_file(ModelInfo(arch="x"), [(entry, sections)])


def test_relative_indices_past_the_tensor():
    from deepshrink.codec.bitpack import pack_fixed
    blob = _file_with_stream([10], {"layout": "relative", "index_bits": 3, "nnz": 2, "entries": 2},
                             {"codes": ("raw", pack_fixed([1, 2], 2), 2, 3),
                              "index": ("raw", pack_fixed([4, 7], 3), 2, 8)})
    expect_format_error(blob, "w/index.*run past the tensor")
    ok = _file_with_stream([10], {"layout": "relative", "index_bits": 3, "nnz": 2, "entries": 2},
                           {"codes": ("raw", pack_fixed([1, 2], 2), 2, 3),
                            "index": ("raw", pack_fixed([4, 3], 3), 2, 8)})
    assert decode_blob(ok)["w"].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 2, 0]


@pytest.mark.parametrize("lengths, match", [([0, 1, 2], "incomplete"), ([1, 1, 1], "over-subscribed")])
def test_bad_huffman_tables_in_a_file(lengths, match):
    blob = _file_with_stream([6], {"layout": "relative", "index_bits": 0, "nnz": 3, "entries": 6},
                             {"codes": ("huffman", encode_table(np.array(lengths)) + b"\x5a", 6, 3)})
    expect_format_error(blob, f"w/codes.*{match}")


def test_csr_past_the_row():
    from deepshrink.codec.bitpack import pack_fixed
    blob = _file_with_stream([2, 3], {"layout": "csr", "index_bits": None, "nnz": 2, "entries": 2},
                             {"rows": ("raw", pack_fixed([1, 1], 2), 2, 4),
                              "cols": ("raw", pack_fixed([2, 3], 2), 2, 3),
                              "codes": ("raw", pack_fixed([0, 1], 1), 2, 2)})
    expect_format_error(blob, "w/cols.*alphabet")


def test_uncompressed_header_reads_the_same(tiny_blob):
    header, data = split_file(tiny_blob)
    plain = _join(header, data)
    assert PREAMBLE.unpack_from(plain)[2] == 0
    for k, v in decode_blob(plain).items():
        assert torch.equal(v, decode_blob(tiny_blob)[k])
    assert parse_file(plain, "p").info.arch == "tiny"


# ------------------------------------------------------------------------- type confusion

def _set(path: str, value):
    """A header edit setting the field at ``path`` (dots; ints index lists) to ``value``."""
    def fn(h):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = h
        for k in parents:
            node = node[k]
        node[last] = value
    return fn


# every field the reader takes from the header, given a list, an object, a float, a bool or a
# string where a string or an int belongs: each is a FormatError naming the field, never a TypeError
_WRONG_TYPES = [
    ("format", ["deepshrink-dsz"], "format"), ("version", 2.0, "version"), ("version", True, "version"),
    ("version", [2], "version"), ("data_size", 23.0, "data_size"), ("data_size", True, "data_size"),
    ("tensors", "x", "tensors"), ("model", [], "model"), ("model.arch", ["tiny"], "arch"),
    ("tensors.1.name", ["fc.bias"], "name"), ("tensors.1.name", {"a": 1}, "name"), ("tensors.1.name", 7, "name"),
    ("tensors.1.dtype", ["float32"], "dtype"), ("tensors.1.dtype", {"float32": 1}, "dtype"),
    ("tensors.1.dtype", 1.5, "dtype"), ("tensors.1.dtype", None, "dtype"),
    ("tensors.1.shape", "2", "shape"), ("tensors.1.shape", [2.0], "shape"), ("tensors.1.shape", [True, 2], "shape"),
    ("tensors.1.shape", {"0": 2}, "shape"),
    ("tensors.1.kind", ["raw"], "kind"), ("tensors.1.kind", {"raw": 1}, "kind"), ("tensors.1.kind", 1, "kind"),
    ("tensors.1.sections", [], "sections"), ("tensors.1.sections", "data", "sections"),
    ("tensors.1.sections.data", [], "fc.bias/data"),
    ("tensors.1.sections.data.offset", 7.0, "offset"), ("tensors.1.sections.data.offset", True, "offset"),
    ("tensors.1.sections.data.offset", "7", "offset"), ("tensors.1.sections.data.length", [8], "length"),
    ("tensors.1.sections.data.crc32", 1.5, "crc32"), ("tensors.1.sections.data.count", 8.0, "count"),
    ("tensors.1.sections.data.alphabet", True, "alphabet"),
    ("tensors.1.sections.data.coder", ["bytes"], "coder"), ("tensors.1.sections.data.coder", {"bytes": 1}, "coder"),
    ("tensors.0.codebook", ["float16"], "codebook"), ("tensors.0.codebook.dtype", ["float16"], "codebook.dtype"),
    ("tensors.0.codebook.dtype", {"float16": 1}, "codebook.dtype"), ("tensors.0.codebook.shape", [2.0], "codebook"),
    ("tensors.0.codebook.shape", "2", "codebook"),
    ("tensors.0.bits", 1.0, "bits"), ("tensors.0.bits", True, "bits"), ("tensors.0.bits", [1], "bits"),
    ("tensors.0.layout", ["relative"], "layout"), ("tensors.0.layout", {"relative": 1}, "layout"),
    ("tensors.0.index_bits", 3.0, "index_bits"), ("tensors.0.index_bits", True, "index_bits"),
    ("tensors.0.nnz", 4.0, "nnz"), ("tensors.0.nnz", [4], "nnz"), ("tensors.0.entries", "4", "entries"),
    ("tensors.0.plain", [], "plain"), ("tensors.0.plain.bits", 15.0, "plain"),
    ("tensors.0.sections.codes.count", 4.0, "count"), ("tensors.0.sections.codes.coder", ["raw"], "coder"),
    ("tensors.2.source", ["fc.weight"], "source"), ("tensors.2.source", {"fc.weight": 1}, "source"),
    ("tensors.2.source", 0, "source"), ("tensors.2.source", None, "source"),
]


@pytest.mark.parametrize("path, value, field", _WRONG_TYPES, ids=[f"{p}={v!r}" for p, v, _ in _WRONG_TYPES])
def test_wrong_types_in_header_fields(tiny_blob, path, value, field):
    msg = expect_format_error(edit_header(tiny_blob, _set(path, value)))
    assert field in msg and "t.dsz" in msg, msg


# ------------------------------------------------------------------------- masks and names

def _one_layer(entries: list[tuple[dict, list[Section]]]) -> bytes:
    return pack_file(ModelInfo(arch="x"), entries)


def _raw_entry(name: str, t: torch.Tensor) -> tuple[dict, list[Section]]:
    data = t.contiguous().view(torch.uint8).numpy().tobytes()
    dtype = str(t.dtype).removeprefix("torch.")
    return ({"name": name, "dtype": dtype, "shape": list(t.shape), "kind": "raw"},
            [Section("data", "bytes", data, len(data), 256)])


def _mask_entry(name: str, source: str, shape: list[int], dtype: str = "bool") -> tuple[dict, list[Section]]:
    return {"name": name, "dtype": dtype, "shape": shape, "kind": "mask", "source": source}, []


def test_mask_of_a_raw_weight():
    w = torch.tensor([[0.0, -1.5], [-0.0, 2.0]])
    state = decode_blob(_one_layer([_raw_entry("w", w), _mask_entry("w_mask", "w", [2, 2]),
                                    _mask_entry("w_fmask", "w", [2, 2], "float16")]))
    assert state["w_mask"].tolist() == [[False, True], [False, True]]
    assert state["w_fmask"].dtype == torch.float16 and state["w_fmask"].tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize("source, match", [
    ("i", "source"),            # an integer tensor
    ("w_mask", "source"),       # a mask entry
    ("v", "source"),            # another shape
    ("later", "source"),        # not earlier
])
def test_mask_source_must_be_an_earlier_float_tensor(source, match):
    entries = [_raw_entry("w", torch.ones(2, 2)), _raw_entry("v", torch.ones(4)),
               _raw_entry("i", torch.ones(2, 2, dtype=torch.int32)), _mask_entry("w_mask", "w", [2, 2]),
               _mask_entry("m", source, [2, 2]), _raw_entry("later", torch.ones(2, 2))]
    expect_format_error(_one_layer(entries), f"tensor 'm'.*{match}")


def _quantized_entry(name: str) -> tuple[dict, list[Section]]:
    from deepshrink.codec.quantized import encode_quantized
    w, cb = torch.tensor([[0.5, 0.0], [0.0, -0.25]]), torch.tensor([-0.25, 0.5])
    fields, sections = encode_quantized(name, w, cb, 1)
    return {"name": name, "dtype": "float32", "shape": [2, 2], "kind": "quantized", **fields}, sections


def test_names_a_quantized_entry_produces_are_taken():
    """``w`` quantized decodes to ``w`` and ``w_codebook``: a raw ``w_codebook`` before or after
    it would silently replace (or be replaced by) the decoded codebook."""
    cb = torch.tensor([9.0, 9.0])
    expect_format_error(_one_layer([_quantized_entry("w"), _raw_entry("w_codebook", cb)]),
                        "tensor 'w_codebook'.*taken by the codebook of quantized tensor 'w'")
    expect_format_error(_one_layer([_raw_entry("w_codebook", cb), _quantized_entry("w")]),
                        "tensor 'w'.*codebook 'w_codebook'")
    expect_format_error(_one_layer([_quantized_entry("w"), _quantized_entry("w_codebook")]), "w_codebook")
    ok = decode_blob(_one_layer([_quantized_entry("w"), _raw_entry("v_codebook", cb)]))
    assert ok["w_codebook"].tolist() == [-0.25, 0.5] and ok["v_codebook"].tolist() == [9.0, 9.0]
