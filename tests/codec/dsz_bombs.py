"""Hostile .dsz files that try to make the reader allocate far more than the file holds.

Each builder returns the bytes of a file with valid CRCs, ``data_size`` and section tiling, so the
reader's limits (docs/FORMAT.md §5) are what stands between it and the allocation. The model is
the zoo's ``lenet300``; the tensor names do not match it (``bomb.*``) unless said otherwise:
decoding happens before the name check, so such a file ends in a ModelError, never in a model.

``audit_bombs()``: the audit's two repros (a 531 kB zlib'd codebook, 2^28 const codes in 38 kB)
and a mask-heavy and a raw-zlib variant. ``limit_bombs(size)``: files of ``size`` bytes that each
push one kind of allocation as close to the element limit of that size as the rules let it.
``measure(paths)`` loads files with ``load_compressed`` (default limits) one after the other in a
fresh subprocess and returns, for each, the growth of ``ru_maxrss`` and of the peak RSS, and the
outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np

from deepshrink.codec.container import (FLAG_ZLIB_HEADER, HEADER_UNITS, MAGIC, PREAMBLE, VERSION, compress_header,
                                        element_limit, inflate_header, pack_file)
from deepshrink.codec.quantized import Section
from deepshrink.codec.schema import ENTRY_UNITS
from deepshrink.io import ModelInfo

__all__ = ["audit_bombs", "limit_bombs", "measure", "codebook_bomb", "const_codes_bomb", "mask_bomb",
           "raw_zlib_bomb", "header_bomb", "many_entries_bomb", "bitmap_bomb"]

INFO = ModelInfo(arch="lenet300")


def _zeros_zlib(nbytes: int) -> bytes:
    """A zlib stream of ``nbytes`` zero bytes (~1/1000 of that), in milliseconds: each MiB is
    deflated once, ending with a full flush (byte-aligned, no back references across it), so the
    same piece repeats; then an empty final block and the Adler-32 of the zeros."""
    def piece(n: int) -> bytes:
        raw = zlib.compressobj(9, zlib.DEFLATED, -15)
        return raw.compress(bytes(n)) + raw.flush(zlib.Z_FULL_FLUSH)

    step = 1 << 20
    body = piece(step) * (nbytes // step) + (piece(nbytes % step) if nbytes % step else b"")
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return b"\x78\xda" + body + end + (((nbytes % 65521) << 16) | 1).to_bytes(4, "big")


def _file(tensors: list, size: int = 0, info: ModelInfo = INFO, pad: str = "tensor",
          pad_name: str = "bomb.pad") -> bytes:
    """pack_file, padded to about ``size`` bytes (never more) with a raw uint8 tensor of stored
    random bytes (one unit a byte), or with ``pad="header"`` random hex in the header's
    ``model.extra`` (HEADER_UNITS a character; hex deflates to about half a byte a character)."""
    blob = pack_file(info, tensors)
    missing = size - len(blob) - 500
    if missing <= 0:
        return blob
    if pad == "tensor":
        data = np.random.default_rng(0).integers(0, 256, missing, dtype=np.uint8).tobytes()
        return pack_file(info, tensors + [({"name": pad_name, "dtype": "uint8", "shape": [missing], "kind": "raw"},
                                           [Section("data", "bytes", data, missing, 256)])])
    chars = 2 * missing
    for _ in range(4):                              # a few corrections of the deflate ratio
        text = np.random.default_rng(0).integers(0, 1 << 62, chars // 16 + 1, dtype=np.int64).tobytes().hex()
        padded = pack_file(ModelInfo(**{**info.__dict__, "extra": {"pad": text[:chars]}}), tensors)
        chars += 2 * (size - 500 - len(padded))
    return padded


def _quantized(name: str, shape: list[int], cb_shape: list[int], cb_section: Section, codes: Section,
               nnz: int, cb_dtype: str = "float32") -> tuple[dict, list[Section]]:
    entry = {"name": name, "dtype": "float32", "shape": shape, "kind": "quantized",
             "codebook": {"dtype": cb_dtype, "shape": cb_shape}, "bits": None, "layout": "relative",
             "index_bits": 0, "nnz": nnz, "entries": codes.count, "plain": {"index_bits": 1, "bits": 0}}
    return entry, [cb_section, codes]


def _dense(name: str, n: int, shape: list[int] | None = None) -> tuple[dict, list[Section]]:
    """A quantized weight of ``n`` elements, every one nonzero (one const code), K = 1."""
    cb = Section("codebook", "bytes", np.float32(0.5).tobytes(), 4, 256)
    codes = Section("codes", "const", (1).to_bytes(4, "little"), n, 2)
    return _quantized(name, shape or [n], [1], cb, codes, n)


def _raw_zeros(name: str, n: int, dtype: str, shape: list[int] | None = None) -> tuple[dict, list[Section]]:
    nbytes = n * {"float64": 8, "int64": 8, "float32": 4, "float16": 2, "uint8": 1, "bool": 1}[dtype]
    return ({"name": name, "dtype": dtype, "shape": shape or [n], "kind": "raw"},
            [Section("data", "zlib", _zeros_zlib(nbytes), nbytes, 256)])


def _with_extra_junk(blob: bytes, junk: str, copies: int) -> bytes:
    """``blob`` with ``copies`` of the JSON text ``junk`` in its header's ``model.extra``."""
    hlen = PREAMBLE.unpack_from(blob)[3]
    text = inflate_header(blob[PREAMBLE.size:PREAMBLE.size + hlen], 1 << 26, "bomb").decode()
    text = text.replace('"extra":{}', '"extra":{"junk":[' + ",".join([junk] * copies) + "]}", 1)
    head = compress_header(text.encode())
    return (PREAMBLE.pack(MAGIC, VERSION, FLAG_ZLIB_HEADER, len(head), zlib.crc32(head)) + head
            + blob[PREAMBLE.size + hlen:])


def codebook_bomb(rows: int = 4096, k: int = 65536, dtype: str = "float16", size: int = 0) -> bytes:
    """The audit's repro: a (rows, 1) weight, no nonzeros, a (rows, k) zlib'd all-zero codebook."""
    item = 2 if dtype == "float16" else 4
    cb = Section("codebook", "zlib", _zeros_zlib(rows * k * item), rows * k * item, 256)
    codes = Section("codes", "const", b"", 0, k + 1)
    return _file([_quantized("bomb.weight", [rows, 1], [rows, k], cb, codes, 0, dtype)], size)


def bitmap_bomb(n: int, size: int = 0, rows: int = 4096) -> bytes:
    """A quantized weight of about ``n`` elements in the bitmap layout (format version 3), one
    nonzero: the adaptive mask of ``n`` bits takes a few bytes."""
    from deepshrink.codec.adaptive import adaptive_encode
    cols = max(1, n // rows)
    cb = Section("codebook", "bytes", np.float32(0.5).tobytes(), 4, 256)
    mask = Section("mask", "adaptive", adaptive_encode(np.array([0], dtype=np.int64), rows, cols), rows * cols, 2)
    codes = Section("codes", "const", (0).to_bytes(4, "little"), 1, 1)
    entry = {"name": "bomb.weight", "dtype": "float32", "shape": [rows, cols], "kind": "quantized",
             "codebook": {"dtype": "float32", "shape": [1]}, "bits": None, "layout": "bitmap",
             "index_bits": None, "nnz": 1, "entries": 1, "plain": {"index_bits": 1, "bits": 0}}
    return _file([(entry, [cb, mask, codes])], size)


def const_codes_bomb(n: int = 1 << 28, size: int = 38_000, pad: str = "header") -> bytes:
    """The audit's repro: ``n`` const-coded codes (all 1: every position nonzero), K = 1; padded
    by default in the header (which the audited reader did not count)."""
    return _file([_dense("bomb.weight", n)], size, pad=pad)


def mask_bomb(n: int, masks: int = 4, dtype: str = "float64", size: int = 0) -> bytes:
    """A dense quantized weight of ``n`` elements and ``masks`` mask entries derived from it."""
    tensors = [_dense("bomb.weight", n)]
    tensors += [({"name": f"bomb.mask{i}", "dtype": dtype, "shape": [n], "kind": "mask", "source": "bomb.weight"},
                 []) for i in range(masks)]
    return _file(tensors, size)


def raw_zlib_bomb(n: int, dtype: str = "float64", size: int = 0) -> bytes:
    """One raw tensor of ``n`` zero elements of ``dtype``, zlib'd."""
    return _file([_raw_zeros("bomb.raw", n, dtype)], size)


def header_bomb(size: int, junk: str = "[]", field: str = "junk", items: int | None = None) -> bytes:
    """A file of about ``size`` bytes whose zlib'd header inflates to the most a file of that size
    may (or holds ``items`` values), filled with copies of a small JSON value (parsed JSON takes
    far more memory than its text) in an unknown header field, or in ``model.extra``
    (``field="extra"``, kept with the model); padded with a raw tensor."""
    pad = max(0, size - 20_000) if size else 0
    data = np.random.default_rng(0).integers(0, 256, pad, dtype=np.uint8).tobytes()
    entry = {"name": "bomb.pad", "dtype": "uint8", "shape": [pad], "kind": "raw",
             "sections": {"data": {"offset": 0, "length": pad, "crc32": zlib.crc32(data), "coder": "bytes",
                                   "count": pad, "alphabet": 256}}}
    model = json.loads(INFO.to_json())
    header = {"format": "deepshrink-dsz", "version": VERSION, "data_size": pad, "model": model, "tensors": [entry]}
    (model["extra"] if field == "extra" else header)["junk"] = "@"
    text = json.dumps(header, separators=(",", ":"))
    if items is None:
        room = (element_limit(pad + 20) - pad - 1000) // HEADER_UNITS    # the pad is one unit a byte
        items = (room - len(text)) // (len(junk) + 1)
    head = compress_header(text.replace('"@"', "[" + ",".join([junk] * items) + "]").encode())
    return PREAMBLE.pack(MAGIC, VERSION, FLAG_ZLIB_HEADER, len(head), zlib.crc32(head)) + head + data


def many_entries_bomb(size: int) -> bytes:
    """As many one-element mask entries as a ``size``-byte file's header and element limits hold."""
    entry = '{"name":"m0000000","dtype":"bool","shape":[1],"kind":"mask","source":"w","sections":{}},'
    per_entry = ENTRY_UNITS + 1 + HEADER_UNITS * len(entry)
    count = min(100_000 - 2, (element_limit(size // 2) - 3 * ENTRY_UNITS) // per_entry)
    tensors = [({"name": "w", "dtype": "float32", "shape": [1], "kind": "raw"},
                [Section("data", "bytes", np.float32(1).tobytes(), 4, 256)])]
    tensors += [({"name": f"m{i:07d}", "dtype": "bool", "shape": [1], "kind": "mask", "source": "w"}, [])
                for i in range(count)]
    return _file(tensors, size, pad="tensor")


def audit_bombs() -> dict[str, bytes]:
    """The audit's repros and two variants, at the sizes the audit gave (all under 1 MB)."""
    return {"codebook 4096x65536 fp16 zlib": codebook_bomb(),
            "2^28 const codes": const_codes_bomb(),
            "4 float64 masks of a 2^24 weight": mask_bomb(1 << 24, 4, "float64", size=2000),
            "raw float64 2^26 zlib": raw_zlib_bomb(1 << 26, "float64")}


def limit_bombs(size: int) -> dict[str, bytes]:
    """Files of about ``size`` bytes, each as close to the element limit of that size as a kind of
    allocation gets (``cap``: the limit in 4-byte units, minus a margin for the header's own)."""
    cap = element_limit(size - 2000) - 5 * ENTRY_UNITS - size - HEADER_UNITS * 2000   # the pad: a unit a byte
    n = cap * 4 // 5                                   # a dense const-coded weight: 4 + 1 bytes an element
    m = n // 785                                       # lenet300 resized to fc1 (m, 784), fc2 (1, m): it loads
    matching = [_dense("fc1.weight", m * 784, [m, 784]), _raw_zeros("fc1.bias", m, "float32"),
                _raw_zeros("fc2.weight", m, "float32", [1, m])]
    matching += [_raw_zeros(k, 1, "float32", [1, 1] if k.endswith("weight") else [1])
                 for k in ("fc2.bias", "fc3.weight", "fc3.bias")]

    def raw_matching(dtype: str) -> list:              # bool: widened to float32 in the model, counted so
        rows = cap // 785
        return [_raw_zeros("fc1.weight", rows * 784, dtype, [rows, 784]), _raw_zeros("fc1.bias", rows, dtype),
                _raw_zeros("fc2.weight", rows, dtype, [1, rows])] + matching[3:]

    wide = ModelInfo(arch="lenet300", kwargs={"in_features": (cap - 40_000) // 300})
    third = cap // 3                                   # header junk, architecture and tensors: a third each
    junk = "[" * 28 + "]" * 28                         # about as deep as model metadata may nest
    wide_junk = _with_extra_junk(_file([_dense("bomb.weight", third * 4 // 5)], size - 4000,
                                       info=ModelInfo(arch="lenet300",
                                                      kwargs={"in_features": (2 * third - 40_000) // 300})),
                                 junk, third // HEADER_UNITS // (len(junk) + 1))
    return {
        "dense const codes": _file([_dense("bomb.weight", n)], size),
        "bitmap, one nonzero": bitmap_bomb(cap - 4096, size),
        "codebook fp16 zlib": codebook_bomb(rows=cap * 4 // 6 // 4096, k=4096, size=size),
        "float64 masks": mask_bomb(cap * 4 // 37, 4, "float64", size=size),
        "float32 masks": mask_bomb(cap * 4 // 69, 16, "float32", size=size),
        "bool masks": mask_bomb(cap * 4 // 21, 16, "bool", size=size),
        "raw float64 zlib": raw_zlib_bomb(cap // 2, "float64", size=size),
        "raw float32 zlib": raw_zlib_bomb(cap, "float32", size=size),
        "raw bool zlib": raw_zlib_bomb(4 * cap, "bool", size=size),
        "lenet300 names, loads": _file(matching, size, pad_name="fc1.weight_mask"),
        "lenet300 raw names, loads": _file(raw_matching("float32"), size, pad_name="fc1.weight_mask"),
        "lenet300 raw bool names, loads": _file(raw_matching("bool"), size, pad_name="fc1.weight_mask"),
        "wide arch + dense codes": _file([_dense("bomb.weight", n)], size, info=wide),
        "wide arch + extra junk + codes": wide_junk,
        "header junk []": header_bomb(size, "[]"),
        "header junk {}": header_bomb(size, "{}"),
        "header junk nested []": header_bomb(size, "[" * 900 + "]" * 900),
        "model.extra junk nested []": header_bomb(size, "[" * 900 + "]" * 900, "extra"),
        "many entries": many_entries_bomb(size),
        "const codes, audit size": const_codes_bomb(
            (element_limit(36_000) - 38_000 - 3 * ENTRY_UNITS - HEADER_UNITS * 2000) * 4 // 5, 38_000, "tensor"),
    }


_PROBE = r"""
import resource, sys
from deepshrink.codec import load_compressed
from deepshrink.errors import DeepShrinkError

def status(key):                       # kB, Linux
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

def reset_peak():                      # VmHWM := VmRSS (Linux >= 4.0), so imports' peak hides nothing
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

for path in sys.argv[1:]:
    strict = reset_peak()
    before, rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, status("VmRSS") if strict else 0
    try:
        load_compressed(path)
        outcome = "loaded"
    except DeepShrinkError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    peak = status("VmHWM") - rss0 if strict else delta
    print(1024 * delta, 1024 * max(delta, peak), outcome.replace("\n", " ")[:300], flush=True)
"""


def measure(paths: list, timeout: float = 600) -> list[tuple[int, int, str]]:
    """[(ru_maxrss growth, peak RSS growth, outcome)] in bytes for each file, loaded one after the
    other in one fresh subprocess. The first is the ru_maxrss delta from just before to just after
    the call; the second is the same with the high-water mark first reset to the current RSS
    (Linux ``clear_refs``), so the peak of the imports cannot hide the load's (>= the first)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *map(str, paths)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode:
        raise RuntimeError(f"probe failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = [line.split(" ", 2) for line in out.stdout.splitlines()]
    return [(int(delta), int(peak), outcome) for delta, peak, outcome in rows]
