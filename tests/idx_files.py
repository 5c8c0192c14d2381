"""IDX files written independently of the reader under test (header by struct, values
big-endian); shared by tests/test_data.py and the ``idx_dir_writer`` fixture. A plain module,
not conftest, so no subfolder's conftest.py can shadow it."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
          np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array as IDX independently of the reader (header by struct, values big-endian)."""
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.newbyteorder("=")]
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_images(n: int, h: int = 6, w: int = 6, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    y = (np.arange(n) % classes).astype(np.uint8)
    return x, y


def write_idx_files(folder: Path, xs, ys, xt, yt, gz: bool = True) -> Path:
    """Write the four MNIST-named IDX files of the given arrays (any IDX-encodable dtypes/shapes)."""
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    write(folder / f"train-images-idx3-ubyte{sfx}", idx_bytes(xs), gz)
    write(folder / f"train-labels-idx1-ubyte{sfx}", idx_bytes(ys), gz)
    write(folder / f"t10k-images-idx3-ubyte{sfx}", idx_bytes(xt), gz)
    write(folder / f"t10k-labels-idx1-ubyte{sfx}", idx_bytes(yt), gz)
    return folder


def write_idx_dir(folder: Path, n_train=12, n_test=6, gz=True, h=6, w=6) -> tuple:
    xs, ys = make_images(n_train, h, w, seed=1)
    xt, yt = make_images(n_test, h, w, seed=2)
    write_idx_files(folder, xs, ys, xt, yt, gz)
    return xs, ys, xt, yt
