"""Data sets held whole in memory, and a fast seeded batch iterator.

Specs (``--data SPEC``):

* ``fashion-mnist``   the Debian package ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist``, or the folder in ``$DEEPSHRINK_DATA``);
* ``idx:DIR``         any folder of IDX files named like MNIST's (``train-images*``, ...);
* ``npz:FILE``        arrays ``x_train, y_train, x_test, y_test`` (Keras' mnist.npz layout);
* ``module:callable`` a function returning ``(train, test)``, each a ``(x, y)`` pair of
  arrays/tensors or an indexable data set of ``(x, y)`` items. The user names the code.

IDX (LeCun's MNIST format): two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension and the values, big-endian. Every field is checked against the
bytes really present before anything is allocated.

Limits, so that a small hostile file cannot exhaust memory:

* one IDX file may declare at most ``MAX_IDX_BYTES`` (1 GiB) of decoded values; the environment
  variable ``DEEPSHRINK_MAX_IDX_BYTES`` (a whole number of bytes) raises or lowers it. The
  declaration is refused before any data is read, and memory then follows the bytes really
  decoded (a gzip stream grows one buffer; a plain file's size is checked first);
* labels are class indices: 1-D (shape ``(N,)``), whole numbers, ``0 <= y < MAX_CLASSES``
  (100,000), so a stray label cannot size a classifier with billions of outputs;
* neither split may be empty.

Images of every IDX type load as float32: uint8 values are divided by 255, the other types
keep their values.
"""

from __future__ import annotations

import gzip
import importlib
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "Split",
    "Dataset",
    "DEFAULT_FASHION_DIR",
    "MAX_IDX_BYTES",
    "MAX_CLASSES",
    "max_idx_bytes",
    "read_idx",
    "load",
    "iterate_batches",
    "augment_batch",
    "num_batches",
    "is_code_spec",
    "spec_from_file",
]

DEFAULT_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install it with: apt-get install dataset-fashion-mnist (or set DEEPSHRINK_DATA)"

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
MAX_CLASSES = 100_000  # labels are class indices 0 .. MAX_CLASSES - 1


def max_idx_bytes() -> int:
    """The most decoded bytes one IDX file may declare: ``$DEEPSHRINK_MAX_IDX_BYTES`` if set,
    else ``MAX_IDX_BYTES``. Read at each call, never at import."""
    raw = os.environ.get(MAX_IDX_BYTES_ENV)
    if raw is None:
        return MAX_IDX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"environment variable {MAX_IDX_BYTES_ENV} must be a positive whole number of "
                        f"bytes, got {raw!r}")
    return value


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


@dataclass
class Split:
    """One split, whole in memory: ``x`` (N, C, H, W) float32, ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int) -> "Split":
        """The first ``n`` samples."""
        return Split(self.x[:n], self.y[:n])

    def tail(self, n: int) -> "Split":
        """The last ``n`` samples (all of them when ``n`` >= the length): the slice of the
        training split a sensitivity scan evaluates on, keeping the test split out of the choice."""
        n = max(0, min(n, len(self)))
        return Split(self.x[len(self) - n:], self.y[len(self) - n:])


@dataclass
class Dataset:
    """Train and test splits, normalised with ``mean``/``std`` (per channel)."""

    name: str
    train: Split
    test: Split
    mean: list[float]
    std: list[float]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def _find(folder: Path, stem: str) -> Path:
    hits = sorted(p for p in folder.glob(stem + "*") if p.is_file())
    if not hits:
        raise DataError(f"{folder}: no file matching {stem}* (expected MNIST-style IDX names)")
    return hits[0]


def _from_idx_dir(folder: Path, name: str) -> tuple[np.ndarray, ...]:
    if not folder.is_dir():
        hint = f"; {INSTALL_HINT}" if name == "fashion-mnist" else ""
        raise DataError(f"{folder}: data folder not found{hint}")
    xs = read_idx(_find(folder, "train-images"))
    ys = read_idx(_find(folder, "train-labels"))
    xt = read_idx(_find(folder, "t10k-images"))
    yt = read_idx(_find(folder, "t10k-labels"))
    return xs, ys, xt, yt


def _from_npz(path: Path) -> tuple[np.ndarray, ...]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}")
            return tuple(np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    except DataError:
        raise
    except Exception as exc:  # zipfile/format errors of every kind
        raise DataError(f"{path}: not a readable npz file ({exc})") from None


def _as_arrays(part, which: str, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """One split returned by a data factory as numpy ``(x, y)``; values are checked by ``load``."""
    try:
        if isinstance(part, (tuple, list)) and len(part) == 2 and hasattr(part[0], "shape"):
            x, y = part
        else:
            items = [part[i] for i in range(len(part))]
            if not items:
                raise DataError(f"{spec}: the {which} split is empty")
            x = torch.stack([torch.as_tensor(np.asarray(a)) for a, _ in items])
            y = np.array([np.asarray(b) for _, b in items])  # labels kept as given: load checks them
        return np.asarray(x), np.asarray(y)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{spec}: {which} split is neither (x, y) arrays nor a data set ({exc})") from None


def _from_callable(spec: str) -> tuple[np.ndarray, ...]:
    mod_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"{spec}: cannot import data factory ({exc})") from None
    out = fn()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise DataError(f"{spec}: must return (train, test), got {type(out).__name__}")
    xs, ys = _as_arrays(out[0], "train", spec)
    xt, yt = _as_arrays(out[1], "test", spec)
    return xs, ys, xt, yt


def is_code_spec(spec: str) -> bool:
    """True when loading ``spec`` would import and call code (a ``module:callable`` spec)."""
    return spec != "fashion-mnist" and not spec.startswith(("idx:", "npz:")) and ":" in spec


def spec_from_file(given: str | None, stored, where: str, trust_code: bool = False) -> str:
    """The data spec to use: the one the user ``given`` (command line or Python call), else the one a
    model file ``stored`` (its ``data`` field), else ``fashion-mnist``.

    A stored ``module:callable`` spec is code named by a file: it is refused unless the user passed
    ``trust_code`` or named the same spec. ``where`` names the file in the error.
    """
    if given:
        return given
    if stored is None:
        return "fashion-mnist"
    if not isinstance(stored, str) or not stored:
        raise DataError(f"{where}: metadata field 'data' must be a non-empty string, got {stored!r}")
    if is_code_spec(stored) and not trust_code:
        raise DataError(
            f"{where}: metadata field 'data' names code {stored!r}; opening a file never imports code: "
            "pass --data SPEC, or --trust-code (Python: trust_code=True) if you trust it")
    return stored


_NUMBER_KINDS = "biuf"  # numpy dtype kinds accepted for images and labels: bool, ints, floats


def _to_nchw(x, where: str) -> torch.Tensor:
    """Images as one new float32 tensor (N, C, H, W), or (N, F) for flat features.

    One conversion, straight to float32 (any byte order), never aliasing the caller's array; only
    uint8 is scaled (divided by 255), the other types keep their values.
    """
    x = np.asarray(x)
    if x.dtype.kind not in _NUMBER_KINDS:
        raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{where}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C), got {tuple(x.shape)}")
    t = torch.from_numpy(np.array(x, dtype=np.float32, order="C", copy=True))
    if x.dtype == np.uint8:
        t.div_(255.0)
    if t.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)  # NHWC -> NCHW (a view)
    return t


def _to_labels(y, where: str) -> torch.Tensor:
    """Labels as an int64 tensor (N,): 1-D, whole numbers, ``0 <= y < MAX_CLASSES``."""
    y = np.asarray(y)
    if y.dtype.kind not in _NUMBER_KINDS:
        raise DataError(f"{where} labels: must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"{where} labels: must be 1-D, shape (N,), got shape {tuple(y.shape)}")
    if y.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.floor(y)).all()):
        bad = y[~(np.isfinite(y) & (y == np.floor(y)))][0]
        raise DataError(f"{where} labels: must be whole numbers (class indices), got {bad!r}")
    low, high = y.min(), y.max()  # in the original dtype: checked before any cast can wrap
    if low < 0:
        raise DataError(f"{where} labels: negative class label {_num(low)}")
    if high >= MAX_CLASSES:
        raise DataError(f"{where} labels: largest label {_num(high)} means more than {MAX_CLASSES} classes "
                        f"(labels must be class indices 0..{MAX_CLASSES - 1})")
    return torch.from_numpy(y.astype(np.int64))


def _num(v) -> int | float:
    """A numpy scalar as a plain Python number, for messages."""
    v = v.item()
    return int(v) if float(v).is_integer() else v


def load(spec: str = "fashion-mnist", mean=None, std=None) -> Dataset:
    """Load a data set by spec; normalise with the given stats or the training split's."""
    if spec == "fashion-mnist":
        folder = Path(os.environ.get("DEEPSHRINK_DATA", DEFAULT_FASHION_DIR))
        arrays = _from_idx_dir(folder, "fashion-mnist")
    elif spec.startswith("idx:"):
        arrays = _from_idx_dir(Path(spec[4:]), spec)
    elif spec.startswith("npz:"):
        arrays = _from_npz(Path(spec[4:]))
    elif is_code_spec(spec):
        arrays = _from_callable(spec)
    else:
        raise DataError(
            f"unknown data spec {spec!r}: use fashion-mnist, idx:DIR, npz:FILE or module:callable"
        )
    xs, ys, xt, yt = arrays
    # labels first: small, and a bad label fails before the images are converted
    y_train, y_test = _to_labels(ys, f"{spec}: train"), _to_labels(yt, f"{spec}: test")
    x_train = _to_nchw(xs, f"{spec} train")
    del xs, arrays  # the raw training images may be freed before the test ones are converted
    x_test = _to_nchw(xt, f"{spec} test")
    del xt
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(
            f"{spec}: {len(x_train)} train images vs {len(y_train)} labels, "
            f"{len(x_test)} test images vs {len(y_test)} labels"
        )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{spec}: train images {tuple(x_train.shape[1:])} vs test {tuple(x_test.shape[1:])}")
    if len(y_train) == 0:
        raise DataError(f"{spec}: the training split is empty")
    if len(y_test) == 0:
        raise DataError(f"{spec}: the test split is empty")
    dims = [0] + list(range(2, x_train.dim()))
    if mean is None or std is None:
        mean = x_train.mean(dim=dims).tolist()
        std = x_train.std(dim=dims).clamp_min(1e-8).tolist()
    shape = [1, -1] + [1] * (x_train.dim() - 2)
    m, s = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    x_train.sub_(m).div_(s)
    x_test.sub_(m).div_(s)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(spec, Split(x_train, y_train), Split(x_test, y_test), list(mean), list(std), num_classes)


def augment_batch(x: torch.Tensor, gen: torch.Generator, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding) and horizontal flip.

    x: (N, C, H, W). Vectorised: one gather for the whole batch.
    """
    n, c, h, w = x.shape
    if shift > 0:
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))  # (N, C, H+2s, W+2s)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (N, H)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (N, W)
        idx_r = rows[:, None, :, None].expand(n, c, h, w + 2 * shift)
        x = padded.gather(2, idx_r)
        idx_c = cols[:, None, None, :].expand(n, c, h, w)
        x = x.gather(3, idx_c)
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world: int = 1,
    augment: bool = False,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; the order is a pure function of (seed, epoch).

    With ``world > 1`` each rank takes an equal strided share of the permutation, so every
    rank runs the same number of steps. ``start`` skips that many batches (resuming).
    """
    n = len(split)
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.arange(n)
    if world > 1:
        per = n // world
        order = order[rank::world][:per]
    for b, lo in enumerate(range(0, len(order), batch_size)):
        if b < start:
            continue
        idx = order[lo:lo + batch_size]
        x = split.x[idx]
        if augment and x.dim() == 4:  # shifts and flips only make sense for images
            g = torch.Generator().manual_seed(_mix(seed, epoch, b, rank))
            x = augment_batch(x, g)
        yield x, split.y[idx]


def _mix(*parts: int) -> int:
    """A 63-bit generator seed from integers (distinct tuples give distinct streams)."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (1 << 63)
    return h


def num_batches(n: int, batch_size: int, world: int = 1) -> int:
    per = n // world if world > 1 else n
    return (per + batch_size - 1) // batch_size
