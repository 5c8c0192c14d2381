"""The .dsz container: magic, version, CRC'd JSON header, sections tiling the data region.

Layout and rules are docs/FORMAT.md §1-2 and §5. Writing places each tensor's sections back to
back and records offset, length and CRC-32; reading checks, before allocating anything, that the
header length fits the bytes present, that every declared shape and count is within the limits
and consistent with its section, that the sections tile the data region exactly, and that every
CRC matches. Every failure is a :class:`FormatError` naming the file and the field or section.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from ..errors import FormatError
from ..io import ModelInfo
from .quantized import Section
from .schema import check_entry

__all__ = ["MAGIC", "VERSION", "PREAMBLE", "MAX_HEADER", "MAX_ELEMENTS", "Parsed", "pack_file", "parse_file",
           "is_dsz"]

MAGIC = b"\x89DSZ\r\n\x1a\n"
VERSION = 2
FORMAT = "deepshrink-dsz"
PREAMBLE = struct.Struct("<8sHHII")          # magic, version, flags, header length, header CRC
FLAG_ZLIB_HEADER = 1                         # the header bytes are a zlib stream of the JSON
MAX_HEADER = 64 << 20
MAX_TENSORS = 100_000
MAX_ELEMENTS = 1 << 28


def is_dsz(head: bytes) -> bool:
    return head[:len(MAGIC)] == MAGIC


def pack_file(info: ModelInfo, tensors: list[tuple[dict, list[Section]]]) -> bytes:
    """The bytes of a .dsz file; ``tensors`` = [(entry fields incl. name/dtype/shape/kind, sections)]."""
    entries, blobs, offset = [], [], 0
    for fields, sections in tensors:
        secs = {}
        for s in sections:
            secs[s.name] = {"offset": offset, "length": len(s.payload), "crc32": zlib.crc32(s.payload),
                            "coder": s.coder, "count": s.count, "alphabet": s.alphabet}
            blobs.append(s.payload)
            offset += len(s.payload)
        entries.append({**fields, "sections": secs})
    header = {"format": FORMAT, "version": VERSION, "data_size": offset,
              "model": json.loads(info.to_json()), "tensors": entries}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    packed = zlib.compress(head, 9)
    flags, head = (FLAG_ZLIB_HEADER, packed) if len(packed) < len(head) else (0, head)
    return PREAMBLE.pack(MAGIC, VERSION, flags, len(head), zlib.crc32(head)) + head + b"".join(blobs)


@dataclass
class Parsed:
    """A checked header and the file it came from."""

    info: ModelInfo
    entries: list[dict]
    blob: bytes
    data_start: int
    where: str

    def payloads(self, entry: dict) -> dict[str, bytes]:
        start = self.data_start
        return {name: self.blob[start + s["offset"]:start + s["offset"] + s["length"]]
                for name, s in entry["sections"].items()}

    @property
    def file_size(self) -> int:
        return len(self.blob)


def _inflate_header(head: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(head, MAX_HEADER + 1)
    except zlib.error as exc:
        raise FormatError(f"{where}: header zlib stream is corrupt ({exc})") from None
    if len(out) > MAX_HEADER or not inflater.eof or inflater.unused_data:
        raise FormatError(f"{where}: header zlib stream is incomplete, has trailing bytes or exceeds "
                          f"{MAX_HEADER} bytes")
    return out


def _read_header(blob: bytes, where: str) -> tuple[dict, int]:
    if len(blob) < PREAMBLE.size:
        raise FormatError(f"{where}: {len(blob)} bytes, too short for a .dsz file (preamble is {PREAMBLE.size})")
    magic, version, flags, hlen, hcrc = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise FormatError(f"{where}: not a .dsz file (bad magic)")
    if version != VERSION:
        raise FormatError(f"{where}: unsupported .dsz version {version} (this reader knows {VERSION})")
    if flags & ~FLAG_ZLIB_HEADER:
        raise FormatError(f"{where}: unknown flags {flags:#x} in the preamble")
    if hlen > min(MAX_HEADER, len(blob) - PREAMBLE.size):
        raise FormatError(f"{where}: header length {hlen} exceeds the {len(blob) - PREAMBLE.size} bytes "
                          f"present (limit {MAX_HEADER})")
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    if zlib.crc32(head) != hcrc:
        raise FormatError(f"{where}: header CRC mismatch (file corrupt)")
    if flags & FLAG_ZLIB_HEADER:
        head = _inflate_header(head, where)
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise FormatError(f"{where}: header is not a {FORMAT} v{VERSION} record")
    return header, PREAMBLE.size + hlen


def _check_tiling(entries: list[dict], data_size: int, where: str) -> None:
    cursor = 0
    for e in entries:
        for name, s in e["sections"].items():
            label = f"{where}: section {e['name']}/{name}"
            if s["offset"] < cursor:
                raise FormatError(f"{label} at offset {s['offset']} overlaps the previous one (ends at {cursor})")
            if s["offset"] > cursor:
                raise FormatError(f"{label} at offset {s['offset']} leaves a gap after {cursor}")
            cursor += s["length"]
            if cursor > data_size:
                raise FormatError(f"{label} ends at {cursor}, past the {data_size}-byte data region")
    if cursor != data_size:
        raise FormatError(f"{where}: sections end at {cursor}, the data region has {data_size} bytes")


def parse_file(blob: bytes, where: str, max_elements: int = MAX_ELEMENTS, check_crc: bool = True) -> Parsed:
    """Check everything but the section contents; CRCs too unless ``check_crc`` is False."""
    header, data_start = _read_header(blob, where)
    info = ModelInfo.from_json(json.dumps(header.get("model")), f"{where}: header field 'model'")
    data_size = header.get("data_size")
    if type(data_size) is not int or data_size != len(blob) - data_start:
        raise FormatError(f"{where}: header field 'data_size' is {data_size!r}, the file holds "
                          f"{len(blob) - data_start} bytes of data")
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise FormatError(f"{where}: header field 'tensors' must be a list of at most {MAX_TENSORS} entries")
    seen: dict[str, dict] = {}
    total = 0
    cap = min(max_elements, (len(blob) << 16) + (1 << 20))
    for i, e in enumerate(entries):
        numel = check_entry(e, seen, where, i)
        total += numel
        if total > cap:
            raise FormatError(f"{where}: tensor {e['name']!r} brings the declared element count to {total}, "
                              f"above the limit {cap} for a {len(blob)}-byte file")
        seen[e["name"]] = e
    _check_tiling(entries, data_size, where)
    parsed = Parsed(info, entries, blob, data_start, where)
    if check_crc:
        for e in entries:
            for name, payload in parsed.payloads(e).items():
                if zlib.crc32(payload) != e["sections"][name]["crc32"]:
                    raise FormatError(f"{where}: section {e['name']}/{name}: CRC mismatch (file corrupt)")
    return parsed
