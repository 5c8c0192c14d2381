"""Checks of one header tensor entry against docs/FORMAT.md §2-5, before any section is read.

Each check is on plain JSON values with Python ints: types, dtype names, shapes, the section set
a kind/layout needs, and every ``count``/``alphabet`` against the tensor's size (so a decoder
never allocates more than the declared shapes allow). The contents are checked while decoding.
"""

from __future__ import annotations

import math

import torch

from ..errors import FormatError
from .entropy import BYTE_CODERS, SYMBOL_CODERS
from .quantized import codebook_rows
from .sparse import MAX_INDEX_BITS, csr_shape

__all__ = ["DTYPES", "MAX_DIMS", "MAX_NAME", "MAX_DIM", "MAX_CODEBOOK", "check_entry", "itemsize"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
MAX_DIMS = 8
MAX_NAME = 1024
MAX_DIM = 1 << 40
MAX_CODEBOOK = 1 << 16          # K (entries per table)
_SECTION_KEYS = ("offset", "length", "crc32", "coder", "count", "alphabet")


def itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=DTYPES[dtype]).element_size()


def _is_int(v) -> bool:
    return type(v) is int


def _shape(value, label: str, what: str, max_dims: int = MAX_DIMS) -> list[int]:
    if (not isinstance(value, list) or len(value) > max_dims
            or not all(_is_int(d) and 0 <= d <= MAX_DIM for d in value)):
        raise FormatError(f"{label}: {what} must be a list of at most {max_dims} ints in [0, 2^40]")
    return value


def _sections(e: dict, file: str, expected: dict[str, tuple]) -> None:
    """``expected``: name -> (allowed coders, count, alphabet or None for any)."""
    secs = e.get("sections")
    if not isinstance(secs, dict) or list(secs) != list(expected):
        got = list(secs) if isinstance(secs, dict) else secs
        raise FormatError(f"{file}: tensor {e['name']!r}: sections {got!r}, expected {list(expected)}")
    for name, (coders, count, alphabet) in expected.items():
        s, where = secs[name], f"{file}: section {e['name']}/{name}"
        if not isinstance(s, dict) or sorted(s) != sorted(_SECTION_KEYS):
            raise FormatError(f"{where}: section record must have exactly {list(_SECTION_KEYS)}")
        for key in ("offset", "length", "crc32", "count", "alphabet"):
            if not _is_int(s[key]) or s[key] < 0:
                raise FormatError(f"{where}: field {key!r} must be a non-negative int, got {s[key]!r}")
        if s["coder"] not in coders:
            raise FormatError(f"{where}: coder {s['coder']!r} not allowed here ({', '.join(coders)})")
        if s["count"] != count:
            raise FormatError(f"{where}: count {s['count']} does not match the tensor (expected {count})")
        if alphabet is not None and s["alphabet"] != alphabet:
            raise FormatError(f"{where}: alphabet {s['alphabet']} does not match the tensor (expected {alphabet})")


def _check_quantized(e: dict, numel: int, label: str, file: str) -> None:
    if e["dtype"] != "float32":
        raise FormatError(f"{label}: a quantized tensor must be float32, not {e['dtype']}")
    cb = e.get("codebook")
    if not isinstance(cb, dict) or cb.get("dtype") not in ("float16", "float32"):
        raise FormatError(f"{label}: field 'codebook' must give dtype float16|float32 and a shape")
    cb_shape = _shape(cb.get("shape"), label, "codebook shape", 2)
    c = codebook_rows(tuple(e["shape"]), tuple(cb_shape), label, FormatError)
    k = cb_shape[-1]
    if k > MAX_CODEBOOK:
        raise FormatError(f"{label}: codebook of {k} entries exceeds {MAX_CODEBOOK}")
    bits = e.get("bits")
    if bits is not None and not (_is_int(bits) and 0 <= bits <= 32):
        raise FormatError(f"{label}: field 'bits' must be null or an int in [0, 32]")
    nnz, entries = e.get("nnz"), e.get("entries")
    if not (_is_int(nnz) and _is_int(entries) and 0 <= nnz <= entries <= numel):
        raise FormatError(f"{label}: need 0 <= nnz <= entries <= {numel}, got nnz={nnz!r} entries={entries!r}")
    plain = e.get("plain")
    if not (isinstance(plain, dict) and sorted(plain) == ["bits", "index_bits"]
            and all(_is_int(v) and v >= 0 for v in plain.values())):
        raise FormatError(f"{label}: field 'plain' must be {{'index_bits': int, 'bits': int}}")
    cb_sec = (BYTE_CODERS, c * k * itemsize(cb["dtype"]), 256)
    if e.get("layout") == "relative":
        b = e.get("index_bits")
        if not (_is_int(b) and 0 <= b <= MAX_INDEX_BITS):
            raise FormatError(f"{label}: field 'index_bits' must be an int in [0, {MAX_INDEX_BITS}]")
        expected = {"codebook": cb_sec, "codes": (SYMBOL_CODERS, entries, k + 1)}
        if b:
            expected["index"] = (SYMBOL_CODERS, entries, 1 << b)
        _sections(e, file, expected)
    elif e.get("layout") == "csr":
        rows, cols = csr_shape(tuple(e["shape"]))
        if numel == 0 or e.get("index_bits") is not None or nnz != entries:
            raise FormatError(f"{label}: CSR needs a non-empty tensor, index_bits null and nnz == entries")
        _sections(e, file, {"codebook": cb_sec, "rows": (SYMBOL_CODERS, rows, cols + 1),
                             "cols": (SYMBOL_CODERS, nnz, cols), "codes": (SYMBOL_CODERS, nnz, max(k, 1))})
    else:
        raise FormatError(f"{label}: unknown layout {e.get('layout')!r}")
    if nnz and k == 0:
        raise FormatError(f"{label}: {nnz} nonzeros but an empty codebook")


def check_entry(e, seen: dict[str, dict], where: str, index: int) -> int:
    """Validate entry number ``index`` (``seen``: earlier entries by name); returns its element count."""
    if not isinstance(e, dict):
        raise FormatError(f"{where}: tensor #{index}: entry must be an object")
    name = e.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in seen:
        raise FormatError(f"{where}: tensor #{index}: field 'name' must be a new string of 1..{MAX_NAME} characters")
    label = f"{where}: tensor {name!r}"
    if e.get("dtype") not in DTYPES:
        raise FormatError(f"{label}: unknown dtype {e.get('dtype')!r}")
    numel = math.prod(_shape(e.get("shape"), label, "shape"))
    kind = e.get("kind")
    if kind == "raw":
        _sections(e, where, {"data": (BYTE_CODERS, numel * itemsize(e["dtype"]), 256)})
    elif kind == "mask":
        src = seen.get(e.get("source"))
        if src is None or src.get("kind") != "quantized" or src["shape"] != e["shape"]:
            raise FormatError(f"{label}: field 'source' must name an earlier quantized tensor of the same shape")
        _sections(e, where, {})
    elif kind == "quantized":
        _check_quantized(e, numel, label, where)
    else:
        raise FormatError(f"{label}: unknown kind {kind!r}")
    return numel
