"""Checks of one header tensor entry against docs/FORMAT.md §2-5, before any section is read.

Each check is on plain JSON values with Python ints: the type of every field first (a list, an
object, a float or a bool where a string or an int belongs is a FormatError naming the field;
``type(v) is int`` since ``True`` is an int), then dtype names, shapes, the section set a
kind/layout needs, and every ``count``/``alphabet`` against the tensor's size. The weight of an
entry (:func:`entry_units`) is what decoding it allocates, in 4-byte units, so the container can
refuse a file before anything is decoded. The contents are checked while decoding.
"""

from __future__ import annotations

import math

import torch

from ..errors import FormatError
from ..names import CODEBOOK_SUFFIX
from .entropy import BYTE_CODERS, SYMBOL_CODERS
from .quantized import codebook_rows, decoded_bytes
from .sparse import BITMAP_MAX_ELEMENTS, BITMAP_MAX_ROWS, MAX_INDEX_BITS, csr_shape

__all__ = ["DTYPES", "FLOAT_DTYPES", "MAX_DIMS", "MAX_NAME", "MAX_DIM", "MAX_CODEBOOK", "CODEBOOK", "UNIT",
           "ENTRY_UNITS", "check_entry", "entry_units", "itemsize"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
MAX_DIMS = 8
MAX_NAME = 1024
MAX_DIM = 1 << 40
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
MAX_CODEBOOK = 1 << 16          # K (entries per table)
CODEBOOK = CODEBOOK_SUFFIX       # a quantized entry <w> decodes to <w> and the buffer <w>_codebook
UNIT = 4                        # bytes per unit of the element limit (one float32)
ENTRY_UNITS = 256               # every entry's bookkeeping (header record, tensor object): 1 KiB
_KINDS = ("raw", "mask", "quantized")
_SECTION_KEYS = ("offset", "length", "crc32", "coder", "count", "alphabet")


def itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=DTYPES[dtype]).element_size()


def _is_int(v) -> bool:
    return type(v) is int


def _choice(value, allowed, label: str, field: str) -> str:
    """``value`` if it is a string among ``allowed``; a list or object is refused, not hashed."""
    if not isinstance(value, str) or value not in allowed:
        raise FormatError(f"{label}: field {field!r} must be one of {', '.join(allowed)}, got {value!r}")
    return value


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
        if not isinstance(s["coder"], str) or s["coder"] not in coders:
            raise FormatError(f"{where}: field 'coder' {s['coder']!r} not allowed here ({', '.join(coders)})")
        if s["count"] != count:
            raise FormatError(f"{where}: count {s['count']} does not match the tensor (expected {count})")
        if alphabet is not None and s["alphabet"] != alphabet:
            raise FormatError(f"{where}: alphabet {s['alphabet']} does not match the tensor (expected {alphabet})")


def _check_quantized(e: dict, numel: int, label: str, file: str, version: int) -> None:
    if e["dtype"] != "float32":
        raise FormatError(f"{label}: a quantized tensor must be float32, not {e['dtype']}")
    cb = e.get("codebook")
    if not isinstance(cb, dict):
        raise FormatError(f"{label}: field 'codebook' must be an object with a dtype and a shape")
    _choice(cb.get("dtype"), ("float16", "float32"), label, "codebook.dtype")
    cb_shape = _shape(cb.get("shape"), label, "codebook shape", 2)
    c = codebook_rows(tuple(e["shape"]), tuple(cb_shape), label, FormatError)
    k = cb_shape[-1]
    if k > MAX_CODEBOOK:
        raise FormatError(f"{label}: codebook of {k} entries exceeds {MAX_CODEBOOK}")
    for key in ("bits", "index_bits"):  # may be null, but are always present (docs/FORMAT.md §2)
        if key not in e:
            raise FormatError(f"{label}: field {key!r} is missing")
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
    layout = _choice(e.get("layout"), ("relative", "csr", "bitmap") if version >= 3 else ("relative", "csr"),
                     label, "layout")
    if layout == "relative":
        b = e.get("index_bits")
        if not (_is_int(b) and 0 <= b <= MAX_INDEX_BITS):
            raise FormatError(f"{label}: field 'index_bits' must be an int in [0, {MAX_INDEX_BITS}]")
        expected = {"codebook": cb_sec, "codes": (SYMBOL_CODERS, entries, k + 1)}
        if b:
            expected["index"] = (SYMBOL_CODERS, entries, 1 << b)
        _sections(e, file, expected)
    elif layout == "csr":
        rows, cols = csr_shape(tuple(e["shape"]))
        if numel == 0 or e.get("index_bits") is not None or nnz != entries:
            raise FormatError(f"{label}: CSR needs a non-empty tensor, index_bits null and nnz == entries")
        _sections(e, file, {"codebook": cb_sec, "rows": (SYMBOL_CODERS, rows, cols + 1),
                             "cols": (SYMBOL_CODERS, nnz, cols), "codes": (SYMBOL_CODERS, nnz, max(k, 1))})
    else:
        rows, _ = csr_shape(tuple(e["shape"]))
        if not 0 < numel <= BITMAP_MAX_ELEMENTS or rows > BITMAP_MAX_ROWS:
            raise FormatError(f"{label}: the bitmap layout needs 1 to 2^40 elements and at most "
                              f"{BITMAP_MAX_ROWS} rows, got {numel} elements in {rows} rows")
        if e.get("index_bits") is not None or nnz != entries or nnz == 0:
            raise FormatError(f"{label}: the bitmap layout needs index_bits null and nnz == entries >= 1")
        _sections(e, file, {"codebook": cb_sec, "mask": (("adaptive",), numel, 2),
                             "codes": (SYMBOL_CODERS, nnz, max(k, 1))})
    if nnz and k == 0:
        raise FormatError(f"{label}: {nnz} nonzeros but an empty codebook")


def check_entry(e, seen: dict[str, dict], where: str, index: int, version: int = 3) -> int:
    """Validate entry number ``index`` (``seen``: earlier entries by name) of a file of format
    ``version`` (2 lacks the bitmap layout); returns its weight (:func:`entry_units`)."""
    if not isinstance(e, dict):
        raise FormatError(f"{where}: tensor #{index}: entry must be an object")
    name = e.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in seen:
        raise FormatError(f"{where}: tensor #{index}: field 'name' must be a new string of 1..{MAX_NAME} characters")
    label = f"{where}: tensor {name!r}"
    _choice(e.get("dtype"), DTYPES, label, "dtype")
    numel = math.prod(_shape(e.get("shape"), label, "shape"))
    kind = _choice(e.get("kind"), _KINDS, label, "kind")
    if kind == "raw":
        _sections(e, where, {"data": (BYTE_CODERS, numel * itemsize(e["dtype"]), 256)})
    elif kind == "mask":
        source = e.get("source")
        src = seen.get(source) if isinstance(source, str) else None
        if (src is None or src["kind"] not in ("raw", "quantized") or src["dtype"] not in FLOAT_DTYPES
                or src["shape"] != e["shape"]):
            raise FormatError(f"{label}: field 'source' must name an earlier raw or quantized floating-point "
                              f"tensor of the same shape, got {source!r}")
        _sections(e, where, {})
    else:
        _check_quantized(e, numel, label, where, version)
    _check_codebook_name(e, seen, label)
    return entry_units(e)


def _check_codebook_name(e: dict, seen: dict[str, dict], label: str) -> None:
    """A quantized entry ``w`` decodes to ``w`` and ``w_codebook``: no other entry may be named so."""
    name = e["name"]
    if e["kind"] == "quantized" and name + CODEBOOK in seen:
        raise FormatError(f"{label}: its codebook {name + CODEBOOK!r} would replace the earlier entry of that name")
    base = name[:-len(CODEBOOK)] if name.endswith(CODEBOOK) else None
    if base is not None and seen.get(base, {}).get("kind") == "quantized":
        raise FormatError(f"{label}: field 'name' is taken by the codebook of quantized tensor {base!r}")


def entry_units(e: dict) -> int:
    """What decoding a checked entry allocates, in units of 4 bytes, plus ``ENTRY_UNITS``:
    raw and mask ``n * itemsize`` bytes; quantized :func:`.quantized.decoded_bytes` (weight,
    codebook, symbol streams)."""
    if e["kind"] == "quantized":
        nbytes = decoded_bytes(e)
    else:
        nbytes = math.prod(e["shape"]) * itemsize(e["dtype"])
    return ENTRY_UNITS + -(-nbytes // UNIT)
