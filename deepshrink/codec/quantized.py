"""A quantized weight <-> its sections: codebook, value codes and sparse index.

Weight sharing (Han, Mao & Dally 2016, §3) leaves every nonzero weight equal to one of ``K``
shared values, so the layer is its sparsity pattern, one ``log2 K``-bit index per nonzero and the
codebook. The model-side convention: a weight ``W`` (float32) with a sibling buffer
``W_codebook`` (float32, ``(K,)`` or per output channel ``(C, K)``); value 0 marks a pruned
position. Each nonzero is matched to its table entry by its float32 bits (an exact match, no
tolerance), all at once with a sorted search over ``row << 32 | bits`` keys. The codebook is
stored as float16 when that round trip keeps every bit, else as float32 (docs/FORMAT.md §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FormatError, ModelError
from .entropy import decode_bytes, decode_symbols, encode_symbols, symbol_dtype
from .bitpack import raw_width
from .sparse import bitmap_chunks, choose_layout, csr_chunks, csr_shape, plain_relative_bits, relative_chunks

__all__ = ["Section", "codes_of", "encode_quantized", "decode_quantized", "decoded_bytes", "codebook_rows"]

_CODEBOOK_ITEMSIZE = {"float16": 2, "float32": 4}


@dataclass
class Section:
    """One section before it is placed in the file."""

    name: str
    coder: str
    payload: bytes
    count: int
    alphabet: int


def codebook_rows(weight_shape: tuple[int, ...], cb_shape: tuple[int, ...], where: str, err=ModelError) -> int:
    """C, the number of codebook tables (1 for a (K,) codebook); checks the shapes agree."""
    if len(cb_shape) == 1:
        return 1
    if len(cb_shape) == 2 and len(weight_shape) >= 1 and cb_shape[0] == weight_shape[0] and cb_shape[0] > 0:
        return int(cb_shape[0])
    raise err(f"{where}: codebook shape {list(cb_shape)} does not fit weight shape {list(weight_shape)} "
              "(expected (K,) or (C_out, K))")


def _keys(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return (rows.astype(np.int64) << 32) | bits.astype(np.int64)


def codes_of(name: str, weight: torch.Tensor, codebook: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(positions, codes): flat positions of the nonzeros (increasing) and their table index."""
    if weight.dtype != torch.float32 or codebook.dtype != torch.float32:
        raise ModelError(f"{name}: quantized weight and codebook must be float32, "
                         f"got {weight.dtype} and {codebook.dtype}")
    c = codebook_rows(tuple(weight.shape), tuple(codebook.shape), name)
    flat = weight.detach().cpu().contiguous().reshape(-1)
    positions = torch.nonzero(flat != 0).reshape(-1).numpy()                 # (nnz,)
    k = int(codebook.shape[-1])
    if positions.size == 0:
        return positions.astype(np.int64), np.zeros(0, dtype=np.int64)
    if k == 0:
        raise ModelError(f"{name}: the weight has nonzeros but the codebook is empty")
    per_row = flat.numel() // c
    table = codebook.detach().cpu().contiguous().reshape(c, k)
    tbits = table.view(torch.int32).numpy().view(np.uint32)                  # (C, K)
    tkeys = _keys(tbits.reshape(-1), np.repeat(np.arange(c), k))              # (C*K,)
    order = np.argsort(tkeys, kind="stable")
    vbits = flat.view(torch.int32).numpy().view(np.uint32)[positions]        # (nnz,)
    vkeys = _keys(vbits, positions // per_row)
    at = np.searchsorted(tkeys[order], vkeys).clip(max=tkeys.size - 1)
    hit = tkeys[order][at] == vkeys
    if not bool(hit.all()):
        bad = int(positions[np.flatnonzero(~hit)[0]])
        raise ModelError(f"{name}: weight value {float(flat[bad])!r} at flat position {bad} is not "
                         "in its codebook (quantize the layer first)")
    return positions.astype(np.int64), order[at] % k


def _codebook_section(codebook: torch.Tensor) -> tuple[str, Section]:
    cb = codebook.detach().cpu().contiguous()
    half = cb.half()
    exact = torch.equal(half.float().view(torch.int32), cb.view(torch.int32))
    stored = half if exact else cb
    raw = stored.reshape(-1).view(torch.uint8).numpy().tobytes()
    return ("float16" if exact else "float32"), Section("codebook", "bytes", raw, len(raw), 256)


def encode_quantized(name: str, weight: torch.Tensor, codebook: torch.Tensor,
                     bits: int | None, bitmap: bool = True) -> tuple[dict, list[Section]]:
    """Header fields and sections of one quantized weight (layout chosen by estimated size;
    ``bitmap`` False leaves out the bitmap layout, which format version 2 lacks)."""
    positions, codes = codes_of(name, weight, codebook)
    k = int(codebook.shape[-1])
    layout = choose_layout(positions, codes, k, tuple(weight.shape), bitmap)
    cb_dtype, cb_section = _codebook_section(codebook)
    sections = [cb_section]
    for sec_name, (coder, payload, count, alphabet) in layout.coded.items():       # bitmap: the mask
        sections.append(Section(sec_name, coder, payload, count, alphabet))
    for sec_name, (symbols, alphabet) in layout.streams.items():
        coder, payload = encode_symbols(symbols, alphabet)
        sections.append(Section(sec_name, coder, payload, int(symbols.size), alphabet))
    plain_b, plain_bits = plain_relative_bits(positions, bits if bits is not None else raw_width(max(k, 1)))
    fields = {"codebook": {"dtype": cb_dtype, "shape": list(codebook.shape)}, "bits": bits,
              "layout": layout.name, "index_bits": layout.index_bits,
              "nnz": int(positions.size), "entries": layout.entries,
              "plain": {"index_bits": plain_b, "bits": plain_bits}}
    return fields, sections


def decoded_bytes(entry: dict) -> int:
    """Bytes :func:`decode_quantized` allocates for a checked entry, from its header alone: the
    float32 weight (4n), the codebook as stored and as float32 ((s + 4)·C·K), every symbol stream
    in its narrowest type, for CSR the (R,) int64 row ends, and for a bitmap the (Q,) int64 column
    counts in place of its mask (decoded a step at a time, never whole). (Plus chunk-sized
    temporaries.)"""
    numel = math.prod(entry["shape"])
    cb = entry["codebook"]
    total = 4 * numel + (_CODEBOOK_ITEMSIZE[cb["dtype"]] + 4) * math.prod(cb["shape"])
    for name, s in entry["sections"].items():
        if name not in ("codebook", "mask"):
            total += s["count"] * symbol_dtype(s["alphabet"]).itemsize
    if entry["layout"] == "csr":
        total += 8 * csr_shape(tuple(entry["shape"]))[0]
    elif entry["layout"] == "bitmap":
        total += 8 * csr_shape(tuple(entry["shape"]))[1]
    return total


def decode_quantized(entry: dict, payloads: dict[str, bytes], file: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, codebook) float32 tensors from a checked header entry and its section payloads;
    errors name ``file`` and the section. Allocates what :func:`decoded_bytes` says."""
    where = f"{file}: tensor {entry['name']!r}"

    def label(sec: str) -> str:
        return f"{file}: section {entry['name']}/{sec}"

    shape = tuple(entry["shape"])
    numel = math.prod(shape)
    cb_meta, secs = entry["codebook"], entry["sections"]
    c = codebook_rows(shape, tuple(cb_meta["shape"]), where, FormatError)
    k = int(cb_meta["shape"][-1])
    np_dtype = np.float16 if cb_meta["dtype"] == "float16" else np.float32
    raw = decode_bytes(secs["codebook"]["coder"], payloads["codebook"], c * k * np.dtype(np_dtype).itemsize,
                       label("codebook"))
    table = np.frombuffer(raw, dtype=np_dtype).astype(np.float32).reshape(c, k)   # (C, K), a new array
    del raw

    def stream(sec: str) -> np.ndarray:                             # (count,) narrowest unsigned type
        meta = secs[sec]
        return decode_symbols(meta["coder"], payloads[sec], meta["count"], meta["alphabet"], label(sec))

    if entry["layout"] == "relative":
        gaps = stream("index") if "index" in secs else None        # b = 0: no gaps stored
        pieces = relative_chunks(gaps, stream("codes"), numel, label("index"))
    elif entry["layout"] == "bitmap":
        pieces = bitmap_chunks(payloads["mask"], stream("codes"), shape, entry["nnz"], label("mask"))
    else:
        pieces = csr_chunks(stream("rows"), stream("cols"), stream("codes"), shape, label("cols"))
    flat = np.zeros(numel, dtype=np.float32)                        # (n,)
    per_row, found = numel // c, 0
    for pos, codes in pieces:                                       # chunks of entries, not entries
        found += pos.size
        if found > entry["nnz"]:
            break
        if pos.size:
            flat[pos] = table[pos // per_row if c > 1 else 0, codes]
    if found != entry["nnz"]:
        raise FormatError(f"{where}: decoded {'at least ' if found > entry['nnz'] else ''}{found} nonzeros, "
                          f"header says {entry['nnz']}")
    weight = torch.from_numpy(flat).reshape(shape)
    return weight, torch.from_numpy(table.reshape(cb_meta["shape"]))
