"""IDX files (LeCun's MNIST format), read safely.

Two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension
and the values, big-endian. Every field is checked against the bytes really present before
anything is allocated: one file may declare at most ``MAX_IDX_BYTES`` (1 GiB) of decoded values
(the environment variable ``DEEPSHRINK_MAX_IDX_BYTES``, a whole number of bytes, raises or lowers
it); the declaration is refused before any data is read, and memory then follows the bytes really
decoded (a gzip stream grows one buffer; a plain file's size is checked first). Values come back
in native byte order.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .limits import env_bytes

__all__ = ["MAX_IDX_BYTES", "MAX_IDX_BYTES_ENV", "max_idx_bytes", "read_idx"]

# IDX type code -> (numpy big-endian dtype, bytes per value)
_IDX_TYPES = {
    0x08: (">u1", 1),
    0x09: (">i1", 1),
    0x0B: (">i2", 2),
    0x0C: (">i4", 4),
    0x0D: (">f4", 4),
    0x0E: (">f8", 8),
}
_CHUNK = 1 << 18  # 256 KiB reads: a read preallocates its size
MAX_IDX_BYTES = 1 << 30  # 1 GiB of decoded values per IDX file; DEEPSHRINK_MAX_IDX_BYTES overrides
MAX_IDX_BYTES_ENV = "DEEPSHRINK_MAX_IDX_BYTES"


def max_idx_bytes() -> int:
    """The most decoded bytes one IDX file may declare: ``$DEEPSHRINK_MAX_IDX_BYTES`` if set,
    else ``MAX_IDX_BYTES``. Read at each call, never at import."""
    return env_bytes(MAX_IDX_BYTES_ENV, MAX_IDX_BYTES)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array in native byte order, validating the header.

    The file is streamed: the header is checked and the declared size bounded (``max_idx_bytes``)
    before the data is read, so a small file (or a gzip bomb) declaring a huge array fails fast.
    """
    path = Path(path)
    limit = max_idx_bytes()
    try:
        with open(path, "rb") as fh:
            is_gzip = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if is_gzip else open
        with opener(path, "rb") as fh:
            return _read_idx_stream(fh, path, limit, is_gzip)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_idx_stream(fh, path: Path, limit: int, is_gzip: bool) -> np.ndarray:
    magic = fh.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(magic)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in _IDX_TYPES:
        raise DataError(f"{path}: bad IDX magic number 0x{magic.hex()}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype, width = _IDX_TYPES[code]
    count = 1
    for d in dims:
        count *= d  # Python int: no overflow
    need = count * width
    if need > limit:
        raise DataError(f"{path}: IDX header declares {need} bytes of data, over the limit of {limit} "
                        f"(set {MAX_IDX_BYTES_ENV} to a larger number of bytes to allow it)")
    left = None if is_gzip else _bytes_left(fh)
    if left is not None and left != need:
        _size_mismatch(path, dims, need, left)
    body = _read_exact(fh, need) if left is not None else _read_growing(fh, need)
    if len(body) != need:
        _size_mismatch(path, dims, need, len(body))
    arr = np.frombuffer(body, dtype=dtype, count=count).reshape(dims)  # a view of body: no copy
    native = arr.dtype.newbyteorder("=")
    if native != arr.dtype:  # big-endian on a little-endian host: swap in place, still no copy
        arr = arr.byteswap(inplace=True).view(native)
    return arr


def _size_mismatch(path: Path, dims, need: int, have: int):
    shown = f"{have}" if have < need else f"more than {need}"
    raise DataError(f"{path}: IDX dimensions {list(dims)} need {need} bytes of data, file has {shown}")


def _bytes_left(fh) -> int | None:
    """Bytes after the current position of a regular file; None when the size is unknown (a pipe)."""
    try:
        st = os.fstat(fh.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return st.st_size - fh.tell() if stat.S_ISREG(st.st_mode) else None


def _read_exact(fh, need: int) -> bytearray:
    """Read ``need`` bytes into one buffer of exactly that size (its size was checked against the
    file's), plus a one-byte probe: a file grown since is too long. Returns what was read."""
    body = bytearray(need)
    view = memoryview(body)
    got = 0
    while got < need:
        n = fh.readinto(view[got:])
        if not n:
            break
        got += n
    view.release()
    if got < need:
        del body[got:]
    elif fh.read(1):
        body.append(0)  # longer than declared
    return body


def _read_growing(fh, need: int) -> bytearray:
    """Read at most ``need + 1`` bytes of a stream of unknown length (gzip) into one growing buffer:
    memory follows the bytes really decoded, not the declaration; one byte more than declared
    tells a too-long stream."""
    body = bytearray()
    while len(body) <= need:
        chunk = fh.read(min(_CHUNK, need + 1 - len(body)))
        if not chunk:
            break
        body += chunk  # grows in place (realloc), no list of chunks and no join
    return body
