"""The .dsz container: magic, version, CRC'd JSON header, sections tiling the data region.

Layout and rules are docs/FORMAT.md §1-2 and §5. Writing places each tensor's sections back to
back and records offset, length and CRC-32, and stores the header JSON through zlib with the
format's preset dictionary (:mod:`.header_dict`, version 3) when that is smaller. Reading
accepts versions 2 and 3 (§6) and checks, before allocating anything, that the header length
fits the bytes present, that every declared shape and count is within the limits and
consistent with its section, that the sections tile the data region exactly, and that every
CRC matches. Every failure is a :class:`FormatError` naming the file and the field or section.

Memory (§5): what a file may make the reader allocate is tied to its size. Its weight, in units of
one decoded float32, is ``HEADER_UNITS`` per byte of header JSON plus every entry's
(:func:`.schema.entry_units`: what decoding it allocates), and must stay within
:func:`element_limit`, by default ``min(2^28, 2^22 + 20 * file size)``; the header inflater stops
at the bytes that leave. Loading a model about doubles the decoded tensors (the model holds a
copy), so a unit stands for ~8 bytes at the peak, and a file under 1 MiB for at most ~210 MB.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from ..errors import FormatError
from ..names import DSZ_MAGIC
from ..modelfile import ModelInfo
from .header_dict import HEADER_DICT
from .quantized import Section
from .schema import check_entry

__all__ = ["MAGIC", "VERSION", "VERSIONS", "PREAMBLE", "MAX_HEADER", "MAX_ELEMENTS", "ELEMENTS_FLOOR",
           "ELEMENTS_PER_BYTE", "HEADER_UNITS", "Parsed", "pack_file", "parse_file", "is_dsz", "element_limit",
           "compress_header", "inflate_header"]

MAGIC = DSZ_MAGIC
VERSION = 3                                  # what the writer writes
VERSIONS = (2, 3)                            # what the reader reads (docs/FORMAT.md §6)
FORMAT = "deepshrink-dsz"
PREAMBLE = struct.Struct("<8sHHII")          # magic, version, flags, header length, header CRC
FLAG_ZLIB_HEADER = 1                         # the header bytes are a zlib stream of the JSON (v3: with HEADER_DICT)
_FDICT = 0x20                                # zlib header (RFC 1950): FLG bit 5, a DICTID follows CMF, FLG
MAX_HEADER = 64 << 20
MAX_TENSORS = 100_000
MAX_ELEMENTS = 1 << 28
ELEMENTS_FLOOR = 1 << 22          # units any file may decode to: a model of 4 Mi weights always loads
ELEMENTS_PER_BYTE = 20            # ... plus this many per byte (a pruned + quantized model ~60x smaller)
HEADER_UNITS = 6                  # units per byte of header JSON: parsed, it takes up to ~48 bytes a byte


def element_limit(file_size: int, max_elements: int | None = None) -> int:
    """Units (one decoded float32 each) a file of ``file_size`` bytes may weigh (docs/FORMAT.md §5):
    by default ``min(MAX_ELEMENTS, ELEMENTS_FLOOR + ELEMENTS_PER_BYTE * file_size)``; a caller that
    passes ``max_elements`` sets the limit itself (higher for a trusted file, lower to be strict)."""
    if max_elements is not None:
        return max_elements
    return min(MAX_ELEMENTS, ELEMENTS_FLOOR + ELEMENTS_PER_BYTE * file_size)


def is_dsz(head: bytes) -> bool:
    return head[:len(MAGIC)] == MAGIC


def compress_header(text: bytes, version: int = VERSION) -> bytes:
    """The zlib stream of a header's JSON text: version 3 with the preset dictionary, 2 without."""
    if version >= 3:
        packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT)
        return packer.compress(text) + packer.flush()
    return zlib.compress(text, 9)


def pack_file(info: ModelInfo, tensors: list[tuple[dict, list[Section]]], version: int = VERSION) -> bytes:
    """The bytes of a .dsz file of format ``version`` (3, or 2 for older readers: then no entry
    may use the bitmap layout); ``tensors`` = [(entry fields incl. name/dtype/shape/kind, sections)]."""
    if version not in VERSIONS:
        raise ValueError(f"cannot write .dsz version {version} (versions {VERSIONS})")
    if version < 3 and any(fields.get("layout") == "bitmap" for fields, _ in tensors):
        raise ValueError(f"the bitmap layout needs .dsz version 3, not {version}")
    entries, blobs, offset = [], [], 0
    for fields, sections in tensors:
        secs = {}
        for s in sections:
            secs[s.name] = {"offset": offset, "length": len(s.payload), "crc32": zlib.crc32(s.payload),
                            "coder": s.coder, "count": s.count, "alphabet": s.alphabet}
            blobs.append(s.payload)
            offset += len(s.payload)
        entries.append({**fields, "sections": secs})
    header = {"format": FORMAT, "version": version, "data_size": offset,
              "model": json.loads(info.to_json()), "tensors": entries}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    packed = compress_header(head, version)
    flags, head = (FLAG_ZLIB_HEADER, packed) if len(packed) < len(head) else (0, head)
    return PREAMBLE.pack(MAGIC, version, flags, len(head), zlib.crc32(head)) + head + b"".join(blobs)


@dataclass
class Parsed:
    """A checked header and the file it came from."""

    info: ModelInfo
    entries: list[dict]
    blob: bytes
    data_start: int
    where: str
    units: int = 0                   # the file's weight: header JSON and entries (units of one float32)
    limit: int = MAX_ELEMENTS        # the element limit it was checked against
    header_units: int = 0            # the header's part of ``units``
    version: int = VERSION           # the file's format version

    def payloads(self, entry: dict) -> dict[str, bytes]:
        start = self.data_start
        return {name: self.blob[start + s["offset"]:start + s["offset"] + s["length"]]
                for name, s in entry["sections"].items()}

    @property
    def file_size(self) -> int:
        return len(self.blob)


def inflate_header(head: bytes, limit: int, where: str, version: int = VERSION) -> bytes:
    """The JSON text of a zlib'd header, at most ``limit`` bytes of it (a longer one is refused
    after ``limit + 1`` bytes are inflated); version 3 needs the preset dictionary (FDICT set and
    DICTID its Adler-32), version 2 has none."""
    if version >= 3:
        if len(head) < 6 or not head[1] & _FDICT or head[2:6] != zlib.adler32(HEADER_DICT).to_bytes(4, "big"):
            raise FormatError(f"{where}: header zlib stream does not use the format's preset dictionary "
                              "(docs/FORMAT.md §2.1)")
        inflater = zlib.decompressobj(zdict=HEADER_DICT)
    else:
        inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(head, limit + 1)
    except zlib.error as exc:
        raise FormatError(f"{where}: header zlib stream is corrupt ({exc})") from None
    if len(out) > limit:
        raise FormatError(f"{where}: header inflates past {limit} bytes, the limit for this file")
    if not inflater.eof or inflater.unused_data:
        raise FormatError(f"{where}: header zlib stream is incomplete or has trailing bytes")
    return out


def _read_header(blob: bytes, where: str, cap: int) -> tuple[dict, int, int]:
    """(header, start of the data region, its weight: HEADER_UNITS per byte of JSON text); the
    header's ``version`` is checked against the preamble's."""
    if len(blob) < PREAMBLE.size:
        raise FormatError(f"{where}: {len(blob)} bytes, too short for a .dsz file (preamble is {PREAMBLE.size})")
    magic, version, flags, hlen, hcrc = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise FormatError(f"{where}: not a .dsz file (bad magic)")
    if version not in VERSIONS:
        raise FormatError(f"{where}: unsupported .dsz version {version} (this reader knows "
                          f"{' and '.join(map(str, VERSIONS))})")
    if flags & ~FLAG_ZLIB_HEADER:
        raise FormatError(f"{where}: unknown flags {flags:#x} in the preamble")
    if hlen > min(MAX_HEADER, len(blob) - PREAMBLE.size):
        raise FormatError(f"{where}: header length {hlen} exceeds the {len(blob) - PREAMBLE.size} bytes "
                          f"present (limit {MAX_HEADER})")
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    if zlib.crc32(head) != hcrc:
        raise FormatError(f"{where}: header CRC mismatch (file corrupt)")
    limit = min(MAX_HEADER, cap // HEADER_UNITS)
    if flags & FLAG_ZLIB_HEADER:
        head = inflate_header(head, limit, where, version)
    elif len(head) > limit:
        raise FormatError(f"{where}: header of {len(head)} bytes exceeds {limit}, the limit for this file")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header is not a JSON object")
    if not isinstance(header.get("format"), str) or header["format"] != FORMAT:
        raise FormatError(f"{where}: header field 'format' is {header.get('format')!r}, expected {FORMAT!r}")
    if type(header.get("version")) is not int or header["version"] != version:
        raise FormatError(f"{where}: header field 'version' is {header.get('version')!r}, the preamble says "
                          f"{version} ({FORMAT} v{version})")
    return header, PREAMBLE.size + hlen, HEADER_UNITS * len(head)


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


def parse_file(blob: bytes, where: str, max_elements: int | None = None, check_crc: bool = True) -> Parsed:
    """Check everything but the section contents; CRCs too unless ``check_crc`` is False."""
    cap = element_limit(len(blob), max_elements)
    header, data_start, header_units = _read_header(blob, where, cap)
    total = header_units
    try:                                  # popped: its parsed copy is freed before it is parsed again
        model_text = json.dumps(header.pop("model", None))
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: header field 'model' cannot be read ({type(exc).__name__})") from None
    info = ModelInfo.from_json(model_text, f"{where}: header field 'model'")
    del model_text
    data_size = header.get("data_size")
    if type(data_size) is not int or data_size != len(blob) - data_start:
        raise FormatError(f"{where}: header field 'data_size' is {data_size!r}, the file holds "
                          f"{len(blob) - data_start} bytes of data")
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise FormatError(f"{where}: header field 'tensors' must be a list of at most {MAX_TENSORS} entries")
    seen: dict[str, dict] = {}
    version = header["version"]
    for i, e in enumerate(entries):
        total += check_entry(e, seen, where, i, version)
        if total > cap:
            hint = "" if max_elements is not None else " (max_elements raises it for a trusted file)"
            raise FormatError(f"{where}: tensor {e['name']!r} brings the decoded size to {total} elements "
                              f"(header included), above the limit {cap} for a {len(blob)}-byte file{hint}")
        seen[e["name"]] = e
    _check_tiling(entries, data_size, where)
    parsed = Parsed(info, entries, blob, data_start, where, total, cap, header_units, version)
    if check_crc:
        for e in entries:
            for name, payload in parsed.payloads(e).items():
                if zlib.crc32(payload) != e["sections"][name]["crc32"]:
                    raise FormatError(f"{where}: section {e['name']}/{name}: CRC mismatch (file corrupt)")
    return parsed
