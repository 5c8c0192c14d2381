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
"""

from __future__ import annotations

import gzip
import importlib
import os
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
_MAX_IDX_BYTES = 1 << 34  # 16 GiB: refuse absurd declared sizes before reading


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array, validating the header.

    The file is streamed: the header is checked and the declared size bounded before the
    data is read, so a small file (or a gzip bomb) declaring a huge array fails fast.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            is_gzip = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if is_gzip else open
        with opener(path, "rb") as fh:
            return _read_idx_stream(fh, path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_idx_stream(fh, path: Path) -> np.ndarray:
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
    if need > _MAX_IDX_BYTES:
        raise DataError(f"{path}: IDX header declares {need} bytes of data, refusing")
    # read in bounded chunks: memory follows the bytes really present, not the declaration;
    # one byte more than declared tells a too-long file
    chunks, got = [], 0
    while got <= need:
        chunk = fh.read(min(_CHUNK, need + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    body = b"".join(chunks)
    if len(body) != need:
        have = f"{len(body)}" if len(body) < need else f"more than {need}"
        raise DataError(f"{path}: IDX dimensions {list(dims)} need {need} bytes of data, file has {have}")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(dims)


@dataclass
class Split:
    """One split, whole in memory: ``x`` (N, C, H, W) float32, ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


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
    if isinstance(part, (tuple, list)) and len(part) == 2 and hasattr(part[0], "shape"):
        x, y = part
    else:
        try:
            items = [part[i] for i in range(len(part))]
            x = torch.stack([torch.as_tensor(np.asarray(a)) for a, _ in items])
            y = torch.as_tensor([int(b) for _, b in items])
        except Exception as exc:
            raise DataError(f"{spec}: {which} split is neither (x, y) nor a data set ({exc})") from None
    return np.asarray(x), np.asarray(y)


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


def _to_nchw(x: np.ndarray, where: str) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, copy=True, order="C"))
    if t.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)  # NHWC -> NCHW
    elif t.dim() != 4 and t.dim() != 2:
        raise DataError(f"{where}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C), got {tuple(t.shape)}")
    scale = 255.0 if t.dtype == torch.uint8 else 1.0
    return t.float().div_(scale)


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
    x_train, x_test = _to_nchw(xs, f"{spec} train"), _to_nchw(xt, f"{spec} test")
    y_train = torch.from_numpy(np.asarray(ys).astype(np.int64)).reshape(-1)
    y_test = torch.from_numpy(np.asarray(yt).astype(np.int64)).reshape(-1)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(
            f"{spec}: {len(x_train)} train images vs {len(y_train)} labels, "
            f"{len(x_test)} test images vs {len(y_test)} labels"
        )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{spec}: train images {tuple(x_train.shape[1:])} vs test {tuple(x_test.shape[1:])}")
    if len(y_train) == 0:
        raise DataError(f"{spec}: the training split is empty")
    if y_train.min() < 0:
        raise DataError(f"{spec}: negative class label")
    dims = [0] + list(range(2, x_train.dim()))
    if mean is None or std is None:
        mean = x_train.mean(dim=dims).tolist()
        std = x_train.std(dim=dims).clamp_min(1e-8).tolist()
    shape = [1, -1] + [1] * (x_train.dim() - 2)
    m, s = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    x_train.sub_(m).div_(s)
    x_test.sub_(m).div_(s)
    num_classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
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
