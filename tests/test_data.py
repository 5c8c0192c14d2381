"""deepshrink.data: the IDX reader, data set specs, normalisation, batching, augmentation."""

from __future__ import annotations

import gzip
import struct
import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink import data, idx
from deepshrink.data import Split, augment_batch, iterate_batches, load, num_batches, read_idx
from deepshrink.errors import ConfigError, DataError

from idx_files import idx_bytes, write, write_idx_dir, write_idx_files

FASHION = Path(data.DEFAULT_FASHION_DIR)

# ----------------------------------------------------------------------------- helpers
# IDX writers (idx_bytes, write, make_images, write_idx_files, write_idx_dir) live in idx_files.py

def tiny_split(n=40, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 5, 5, generator=g), torch.arange(n))


# ----------------------------------------------------------------------------- golden bytes

# 2 images of 2x3, type 0x08 (ubyte), 3 dimensions
GOLDEN_IMAGES = (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03"
                 + bytes([0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]))
GOLDEN_LABELS = b"\x00\x00\x08\x01" + b"\x00\x00\x00\x04" + bytes([9, 0, 3, 7])


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_golden_images_and_labels(tmp_path, gz):
    imgs = read_idx(write(tmp_path / "imgs", GOLDEN_IMAGES, gz))
    assert imgs.shape == (2, 2, 3)
    assert imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[0], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(imgs[1], [[250, 251, 252], [253, 254, 255]])
    labels = read_idx(write(tmp_path / "labels", GOLDEN_LABELS, gz))
    assert labels.shape == (4,)
    np.testing.assert_array_equal(labels, [9, 0, 3, 7])


def test_read_idx_golden_big_endian_types(tmp_path):
    # int16 [258, -2] and float32 [1.5] written by hand, big-endian
    i16 = b"\x00\x00\x0b\x01\x00\x00\x00\x02" + b"\x01\x02\xff\xfe"
    np.testing.assert_array_equal(read_idx(write(tmp_path / "a", i16)), [258, -2])
    f32 = b"\x00\x00\x0d\x01\x00\x00\x00\x01" + struct.pack(">f", 1.5)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "b", f32)), [1.5])


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(3)
    arr = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    out = read_idx(write(tmp_path / "x.idx", idx_bytes(arr), gz))
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


# ----------------------------------------------------------------------------- malformed headers

def _bad(name, payload):
    return pytest.param(payload, id=name)


BAD_FILES = [
    _bad("empty", b""),
    _bad("too-short", b"\x00\x00"),
    _bad("bad-magic", b"\x12\x34\x08\x01\x00\x00\x00\x01\x05"),
    _bad("unknown-type-code", b"\x00\x00\x07\x01\x00\x00\x00\x01\x05"),
    _bad("zero-dims", b"\x00\x00\x08\x00"),
    _bad("truncated-header", b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00"),
    _bad("data-too-short", b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(3)),
    _bad("data-too-long", b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(5)),
    _bad("data-too-short-wide-type", b"\x00\x00\x0c\x01\x00\x00\x00\x02" + bytes(7)),
]


@pytest.mark.parametrize("payload", BAD_FILES)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_malformed_raises_data_error_naming_file(tmp_path, payload, gz):
    path = write(tmp_path / "broken-file.idx", payload, gz)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert "broken-file.idx" in str(err.value)


@pytest.mark.parametrize("dims", [
    (1024, 1024, 1024),                 # 1 GiB declared: at the cap, caught by the size check
    (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),  # absurd: over the cap
    (60000, 28, 28),
])
def test_read_idx_huge_declared_dims_fail_fast_without_allocating(tmp_path, dims):
    payload = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + bytes(16)
    path = write(tmp_path / "huge.idx", payload)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "huge.idx" in str(err.value)
    assert peak < 1 << 20, f"read_idx allocated {peak} bytes for a {len(payload)}-byte file"


@pytest.mark.parametrize("kind", ["truncated", "bad-crc", "bad-deflate", "bad-method"])
def test_read_idx_corrupt_gzip(tmp_path, kind):
    good = gzip.compress(GOLDEN_IMAGES * 1)
    if kind == "truncated":
        blob = good[: len(good) // 2]
    elif kind == "bad-crc":
        b = bytearray(good)
        b[-6] ^= 0x01  # inside the CRC32 trailer
        blob = bytes(b)
    elif kind == "bad-deflate":
        blob = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 20  # invalid block type
    else:
        blob = b"\x1f\x8b\x09\x00" + bytes(20)
    path = write(tmp_path / "corrupt.gz", blob)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert "corrupt.gz" in str(err.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")


# ----------------------------------------------------------------------------- load(spec)

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_idx_dir(tmp_path, gz):
    xs, ys, xt, yt = write_idx_dir(tmp_path / "d", gz=gz)
    ds = load(f"idx:{tmp_path / 'd'}")
    assert ds.train.x.shape == (12, 1, 6, 6) and ds.train.x.dtype == torch.float32
    assert ds.test.x.shape == (6, 1, 6, 6)
    assert ds.train.y.dtype == torch.int64
    assert ds.train.y.tolist() == ys.tolist() and ds.test.y.tolist() == yt.tolist()
    assert ds.num_classes == 3
    assert ds.input_shape == (1, 6, 6)
    # values: the normalisation is affine and invertible
    back = ds.train.x[:, 0] * ds.std[0] + ds.mean[0]
    np.testing.assert_allclose(back.numpy(), xs / 255.0, atol=1e-5)
    assert ds.mean[0] == pytest.approx(xs.mean() / 255.0, rel=1e-5)


def test_load_idx_dir_missing_file(tmp_path):
    write_idx_dir(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        load(f"idx:{tmp_path / 'd'}")


def test_load_idx_dir_label_count_mismatch(tmp_path):
    write_idx_dir(tmp_path / "d", gz=False)
    write(tmp_path / "d" / "train-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="labels"):
        load(f"idx:{tmp_path / 'd'}")


def _write_npz(path, n_train=20, n_test=8, h=5, w=5, drop=None):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        y_train=(np.arange(n_train) % 4).astype(np.int64),
        x_test=rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        y_test=(np.arange(n_test) % 4).astype(np.int64),
    )
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return arrays


def test_load_npz(tmp_path):
    arrays = _write_npz(tmp_path / "d.npz")
    ds = load(f"npz:{tmp_path / 'd.npz'}")
    assert ds.train.x.shape == (20, 1, 5, 5)
    assert ds.test.x.shape == (8, 1, 5, 5)
    assert ds.train.y.tolist() == arrays["y_train"].tolist()
    assert ds.num_classes == 4


def test_load_npz_missing_array(tmp_path):
    _write_npz(tmp_path / "d.npz", drop="y_test")
    with pytest.raises(DataError, match="y_test"):
        load(f"npz:{tmp_path / 'd.npz'}")


def test_load_npz_missing_or_garbage_file(tmp_path):
    with pytest.raises(DataError, match="nothere.npz"):
        load(f"npz:{tmp_path / 'nothere.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz"):
        load(f"npz:{tmp_path / 'junk.npz'}")


def test_load_module_callable(tmp_path, monkeypatch):
    mod = "ds_test_data_factory_mod"
    (tmp_path / f"{mod}.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    rng = np.random.default_rng(0)\n"
        "    xs = rng.random((10, 1, 4, 4)).astype(np.float32)\n"
        "    xt = rng.random((4, 1, 4, 4)).astype(np.float32)\n"
        "    return (xs, np.arange(10) % 2), (xt, np.arange(4) % 2)\n"
        "def bad():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        ds = load(f"{mod}:make")
        assert ds.train.x.shape == (10, 1, 4, 4) and ds.test.x.shape == (4, 1, 4, 4)
        assert ds.num_classes == 2
        assert ds.train.y.tolist() == [i % 2 for i in range(10)]
        with pytest.raises(DataError, match="train, test"):
            load(f"{mod}:bad")
        with pytest.raises(DataError, match="cannot import"):
            load(f"{mod}:no_such_function")
    finally:
        import sys
        sys.modules.pop(mod, None)


def test_a_failing_data_factory_is_one_data_error(tmp_path, monkeypatch):
    """Its module fails to import (a SyntaxError) or the factory itself raises: one DataError."""
    (tmp_path / "ds_test_data_syntax_mod.py").write_text("def make(:\n")
    (tmp_path / "ds_test_data_raising_mod.py").write_text("def make():\n    raise OSError('no such file: x.csv')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(DataError, match="cannot import 'ds_test_data_syntax_mod' \\(SyntaxError"):
            load("ds_test_data_syntax_mod:make")
        with pytest.raises(DataError, match="data factory failed \\(OSError: no such file: x.csv\\)"):
            load("ds_test_data_raising_mod:make")
    finally:
        sys.modules.pop("ds_test_data_raising_mod", None)


def test_load_unknown_spec():
    with pytest.raises(DataError, match="unknown data spec"):
        load("cifar-10")


def test_load_missing_idx_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load(f"idx:{tmp_path / 'absent'}")


def test_load_fashion_mnist_missing_folder_hints_install(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "no-such-folder"))
    with pytest.raises(DataError) as err:
        load("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "no-such-folder" in str(err.value)


def test_load_fashion_mnist_honours_env_folder(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "fm")
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "fm"))
    ds = load("fashion-mnist")
    assert len(ds.train) == 12 and len(ds.test) == 6


# ----------------------------------------------------------------------------- normalisation

def test_normalisation_train_stats(tmp_path):
    _write_npz(tmp_path / "d.npz", n_train=64)
    ds = load(f"npz:{tmp_path / 'd.npz'}")
    assert abs(ds.train.x.mean().item()) < 1e-5
    assert ds.train.x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert len(ds.mean) == len(ds.std) == 1


def test_normalisation_with_given_stats(tmp_path):
    arrays = _write_npz(tmp_path / "d.npz")
    ds = load(f"npz:{tmp_path / 'd.npz'}", mean=[0.5], std=[0.25])
    assert ds.mean == [0.5] and ds.std == [0.25]
    expect = (arrays["x_test"] / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(ds.test.x[:, 0].numpy(), expect, atol=1e-5)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file()
                    and not (FASHION / "train-images-idx3-ubyte").is_file(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("DEEPSHRINK_DATA", raising=False)
    ds = load("fashion-mnist")
    assert ds.train.x.shape == (60000, 1, 28, 28)
    assert ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert sorted(ds.train.y.unique().tolist()) == list(range(10))
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)  # Fashion-MNIST's known pixel mean
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-3)


# ----------------------------------------------------------------------------- every spec kind, same checks

def _write_spec(kind, root, monkeypatch, xs, ys, xt, yt) -> str:
    """Write the arrays as an ``idx:`` folder, an ``npz:`` file or a ``module:callable`` factory."""
    if kind == "idx":
        write_idx_files(root / "d", xs, ys, xt, yt, gz=True)
        return f"idx:{root / 'd'}"
    if kind == "npz":
        np.savez(root / "d.npz", x_train=xs, y_train=ys, x_test=xt, y_test=yt)
        return f"npz:{root / 'd.npz'}"
    mod = types.ModuleType("ds_test_data_fake_factory")
    mod.make = lambda: ((xs, ys), (xt, yt))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return f"{mod.__name__}:make"


KINDS = ["idx", "npz", "callable"]


def _images(n, dtype="u1", seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    return (rng.standard_normal((n, 4, 4)) * 300).astype(dtype)


def _load_error(kind, tmp_path, monkeypatch, ys, yt, n_train=None, n_test=None) -> str:
    n_train = len(ys) if n_train is None else n_train
    n_test = len(yt) if n_test is None else n_test
    spec = _write_spec(kind, tmp_path, monkeypatch, _images(n_train), ys, _images(n_test, seed=1), yt)
    with pytest.raises(DataError) as err:
        load(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert spec in msg  # names the spec
    return msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["i2", "i4", "f4", "f8"])
def test_load_wide_image_types_keep_values(tmp_path, monkeypatch, kind, dtype):
    # IDX stores these big-endian: torch.from_numpy used to refuse them. Only uint8 is divided by 255.
    xs, xt = _images(10, dtype), _images(4, dtype, seed=1)
    ys, yt = (np.arange(10) % 3).astype(np.uint8), (np.arange(4) % 3).astype(np.uint8)
    ds = load(_write_spec(kind, tmp_path, monkeypatch, xs, ys, xt, yt))
    assert ds.train.x.dtype == torch.float32 and ds.train.x.shape == (10, 1, 4, 4)
    back = ds.test.x[:, 0] * ds.std[0] + ds.mean[0]
    np.testing.assert_allclose(back.numpy(), xt.astype(np.float64), rtol=1e-5, atol=1e-3)
    assert ds.mean[0] == pytest.approx(xs.astype(np.float64).mean(), rel=1e-4, abs=1e-3)
    assert ds.train.y.tolist() == ys.tolist()


def test_load_uint8_is_scaled_but_int8_is_not(tmp_path, monkeypatch):
    xs = np.full((2, 3, 3), 100, np.int8)
    spec = _write_spec("idx", tmp_path, monkeypatch, xs, np.array([0, 1], np.uint8), xs, np.array([0, 1], np.uint8))
    ds = load(spec, mean=[0.0], std=[1.0])
    assert ds.train.x.unique().tolist() == [100.0]


def test_load_callable_big_endian_arrays_and_caller_arrays_untouched(monkeypatch, tmp_path):
    xs = np.arange(2 * 3 * 3, dtype=">f4").reshape(2, 3, 3)
    xt = xs.astype(">i2")
    xs_before, xt_before = xs.copy(), xt.copy()
    ys = np.array([0, 1], ">i4")
    ds = load(_write_spec("callable", tmp_path, monkeypatch, xs, ys, xt, ys))
    assert ds.num_classes == 2
    np.testing.assert_allclose((ds.test.x[:, 0] * ds.std[0] + ds.mean[0]).numpy(), xt_before, atol=1e-4)
    # normalisation works on a private float32 copy, never on the factory's own arrays
    np.testing.assert_array_equal(xs, xs_before)
    np.testing.assert_array_equal(xt, xt_before)


def test_read_idx_returns_native_byte_order(tmp_path):
    arr = np.array([[1, -2], [300, -40000]], np.int32)
    out = read_idx(write(tmp_path / "x.idx", idx_bytes(arr)))
    assert out.dtype.isnative and out.dtype == np.int32
    assert torch.equal(torch.from_numpy(out), torch.from_numpy(arr))


@pytest.mark.parametrize("kind", KINDS)
def test_load_images_of_unknown_rank_or_type_refused(tmp_path, monkeypatch, kind):
    y = np.zeros(3, np.uint8)
    spec = _write_spec(kind, tmp_path, monkeypatch, np.zeros((3, 2, 2, 2, 2), np.uint8), y, np.zeros((3, 2, 2, 2, 2), np.uint8), y)
    with pytest.raises(DataError, match="images must be"):
        load(spec)


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_huge_label(tmp_path, monkeypatch, kind):
    # one label of 2**31 - 1 used to size the classifier to 2**31 classes
    ys = np.array([0, 1, 2**31 - 1, 2], np.int32)
    msg = _load_error(kind, tmp_path, monkeypatch, ys, np.array([0, 1], np.int32))
    assert "2147483647" in msg and str(data.MAX_CLASSES) in msg and "train" in msg


@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_huge_label_in_test_split(tmp_path, monkeypatch, kind):
    msg = _load_error(kind, tmp_path, monkeypatch, np.array([0, 1], np.int32), np.array([0, 100_000], np.int32))
    assert "100000" in msg and "test" in msg


def test_load_max_classes_boundary(tmp_path, monkeypatch):
    ys = np.array([0, data.MAX_CLASSES - 1], np.int32)
    ds = load(_write_spec("npz", tmp_path, monkeypatch, _images(2), ys, _images(1), np.array([3], np.int32)))
    assert ds.num_classes == data.MAX_CLASSES == 100_000


@pytest.mark.parametrize("kind", ["npz", "callable"])
def test_load_refuses_uint64_label_without_wrapping(tmp_path, monkeypatch, kind):
    # cast to int64 first, 2**64 - 1 would read as -1: the check runs on the original values
    msg = _load_error(kind, tmp_path, monkeypatch, np.array([0, 2**64 - 1], np.uint64), np.array([0], np.uint64))
    assert str(2**64 - 1) in msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_refuses_negative_labels(tmp_path, monkeypatch, kind, split):
    good, bad = np.array([0, 1, 2], np.int16), np.array([0, -1, 2], np.int16)
    ys, yt = (bad, good) if split == "train" else (good, bad)
    msg = _load_error(kind, tmp_path, monkeypatch, ys, yt)
    assert "negative class label -1" in msg and split in msg


@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_labels_not_1d(tmp_path, monkeypatch, kind):
    # 10x10 labels for 100 images used to be flattened silently
    msg = _load_error(kind, tmp_path, monkeypatch, np.zeros((10, 10), np.uint8), np.zeros(4, np.uint8),
                      n_train=100)
    assert "1-D" in msg and "(10, 10)" in msg


@pytest.mark.parametrize("kind", ["npz", "callable"])
def test_load_refuses_one_hot_column_labels(tmp_path, monkeypatch, kind):
    msg = _load_error(kind, tmp_path, monkeypatch, np.zeros((5, 1), np.int64), np.zeros(2, np.int64))
    assert "1-D" in msg and "(5, 1)" in msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [1.5, float("nan"), float("inf")], ids=["fraction", "nan", "inf"])
def test_load_refuses_fractional_float_labels(tmp_path, monkeypatch, kind, bad):
    msg = _load_error(kind, tmp_path, monkeypatch, np.array([0.0, bad, 2.0]), np.array([0.0, 1.0]))
    assert "whole numbers" in msg


@pytest.mark.parametrize("kind", KINDS)
def test_load_accepts_whole_float_labels(tmp_path, monkeypatch, kind):
    ys = np.array([0.0, 3.0, 2.0], np.float32)
    ds = load(_write_spec(kind, tmp_path, monkeypatch, _images(3), ys, _images(2), np.array([1.0, 0.0], np.float32)))
    assert ds.train.y.dtype == torch.int64 and ds.train.y.tolist() == [0, 3, 2]
    assert ds.num_classes == 4


@pytest.mark.parametrize("kind", ["npz", "callable"])
def test_load_refuses_string_labels(tmp_path, monkeypatch, kind):
    msg = _load_error(kind, tmp_path, monkeypatch, np.array(["cat", "dog"]), np.array(["cat"]))
    assert "integer class indices" in msg


def test_load_callable_data_set_of_items_checks_labels(monkeypatch, tmp_path):
    mod = types.ModuleType("ds_test_data_items_factory")
    train = [(np.zeros((1, 2, 2), np.float32), 0.5), (np.zeros((1, 2, 2), np.float32), 1.0)]
    test = [(np.zeros((1, 2, 2), np.float32), 1)]
    mod.make = lambda: (train, test)
    mod.empty = lambda: (train, [])
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    with pytest.raises(DataError, match="whole numbers"):  # int(0.5) used to truncate it silently to 0
        load(f"{mod.__name__}:make")
    train[0] = (train[0][0], 0)
    assert load(f"{mod.__name__}:make").train.y.tolist() == [0, 1]
    with pytest.raises(DataError, match="test split is empty"):
        load(f"{mod.__name__}:empty")


# ----------------------------------------------------------------------------- empty splits

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_refuses_empty_split(tmp_path, monkeypatch, kind, split):
    # an empty test split used to give "accuracy nan%" and exit 0 downstream
    ys = np.zeros(0 if split == "train" else 4, np.uint8)
    yt = np.zeros(0 if split == "test" else 4, np.uint8)
    msg = _load_error(kind, tmp_path, monkeypatch, ys, yt)
    assert f"the {'training' if split == 'train' else 'test'} split is empty" in msg


# ----------------------------------------------------------------------------- size limits

def test_max_idx_bytes_default_and_env(monkeypatch):
    monkeypatch.delenv("DEEPSHRINK_MAX_IDX_BYTES", raising=False)
    assert data.max_idx_bytes() == data.MAX_IDX_BYTES == 1 << 30
    monkeypatch.setenv("DEEPSHRINK_MAX_IDX_BYTES", "4096")
    assert data.max_idx_bytes() == 4096
    monkeypatch.setenv("DEEPSHRINK_MAX_IDX_BYTES", str(1 << 40))  # raising it is allowed
    assert data.max_idx_bytes() == 1 << 40


@pytest.mark.parametrize("value", ["", "abc", "1.5", "0", "-4", "1GB"])
def test_max_idx_bytes_bad_env_value(tmp_path, monkeypatch, value):
    monkeypatch.setenv("DEEPSHRINK_MAX_IDX_BYTES", value)
    path = write(tmp_path / "x.idx", GOLDEN_LABELS)
    with pytest.raises(DataError, match="DEEPSHRINK_MAX_IDX_BYTES") as err:
        read_idx(path)
    assert repr(value) in str(err.value) and "\n" not in str(err.value)


def _declaring(n_bytes: int) -> bytes:
    """A complete uint8 IDX file of ``n_bytes`` zeros, dims consistent with the data."""
    return struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">2I", n_bytes // 1024, 1024) + bytes(n_bytes)


def _peak_of(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["env", "constant"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_over_limit_refused_before_reading_data(tmp_path, monkeypatch, how, gz):
    monkeypatch.delenv("DEEPSHRINK_MAX_IDX_BYTES", raising=False)
    if how == "env":
        monkeypatch.setenv("DEEPSHRINK_MAX_IDX_BYTES", str(1 << 20))
    else:
        monkeypatch.setattr(idx, "MAX_IDX_BYTES", 1 << 20)
    over = write(tmp_path / "over.idx", _declaring(4 << 20), gz)  # 4 MiB declared and present
    at = write(tmp_path / "at.idx", _declaring(1 << 20), gz)  # exactly at the limit: fine

    def refused():
        with pytest.raises(DataError) as err:
            read_idx(over)
        msg = str(err.value)
        assert "over.idx" in msg and str(4 << 20) in msg and "DEEPSHRINK_MAX_IDX_BYTES" in msg

    peak = _peak_of(refused)
    assert peak < 256 << 10, f"read {peak} bytes of a file it should refuse from its header"
    assert read_idx(at).shape == (1024, 1024)


def test_read_idx_default_limit_is_one_gib(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSHRINK_MAX_IDX_BYTES", raising=False)
    payload = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 1024, 1024, 1025) + bytes(16)
    with pytest.raises(DataError, match="over the limit of 1073741824.*DEEPSHRINK_MAX_IDX_BYTES"):
        read_idx(write(tmp_path / "big.idx", payload))


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory):
    """64 MiB of zeros in a ~64 kB gzip, behind headers declaring 64 MiB (consistent) or 1 kB."""
    root = tmp_path_factory.mktemp("bomb")
    zeros = bytes(64 << 20)
    consistent = struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">2I", 64 << 10, 1024)
    small = struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 1024)
    paths = {}
    for name, head in [("consistent", consistent), ("small-header", small)]:
        with gzip.open(root / f"{name}.gz", "wb", compresslevel=1) as fh:
            fh.write(head)
            fh.write(zeros)
        paths[name] = root / f"{name}.gz"
    return paths


@pytest.mark.parametrize("which", ["consistent", "small-header"])
def test_read_idx_gzip_bomb_fails_fast(gzip_bomb, monkeypatch, which):
    monkeypatch.setenv("DEEPSHRINK_MAX_IDX_BYTES", str(1 << 20))
    path = gzip_bomb[which]
    assert path.stat().st_size < 1 << 20  # decompresses to 64 times the limit

    def refused():
        with pytest.raises(DataError, match=path.name):
            read_idx(path)

    t0 = time.perf_counter()
    peak = _peak_of(refused)
    assert time.perf_counter() - t0 < 2.0
    assert peak < 1 << 20, f"{peak} bytes held for a refused gzip bomb"


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_holds_one_copy_of_the_data(tmp_path, gz):
    # the chunk list plus b"".join held the data twice; one growing buffer holds it once
    n = 8 << 20
    path = write(tmp_path / "x.idx", _declaring(n), gz)
    peak = _peak_of(lambda: read_idx(path))
    assert peak < n * 1.3 + (1 << 20), f"peak {peak} bytes to read {n} bytes"


# ----------------------------------------------------------------------------- batches

def _order(split, **kw):
    return torch.cat([y for _, y in iterate_batches(split, 7, **kw)])


def test_iterate_batches_order_is_pure_function_of_seed_and_epoch():
    split = tiny_split()
    a = _order(split, shuffle=True, seed=3, epoch=1)
    torch.manual_seed(12345)  # the global RNG must not matter
    b = _order(split, shuffle=True, seed=3, epoch=1)
    assert torch.equal(a, b)
    assert sorted(a.tolist()) == list(range(40))
    assert not torch.equal(a, _order(split, shuffle=True, seed=3, epoch=2))
    assert not torch.equal(a, _order(split, shuffle=True, seed=4, epoch=1))


def test_iterate_batches_unshuffled_and_sizes():
    split = tiny_split(40)
    batches = list(iterate_batches(split, 16))
    assert [len(y) for _, y in batches] == [16, 16, 8]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(40))
    assert torch.equal(batches[0][0], split.x[:16])
    assert num_batches(40, 16) == 3


@pytest.mark.parametrize("n", [40, 41])
def test_iterate_batches_two_ranks_disjoint_equal(n):
    split = tiny_split(n)
    r0 = _order(split, shuffle=True, seed=1, epoch=0, rank=0, world=2)
    r1 = _order(split, shuffle=True, seed=1, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) == n // 2
    assert not set(r0.tolist()) & set(r1.tolist())
    steps0 = len(list(iterate_batches(split, 7, shuffle=True, rank=0, world=2)))
    steps1 = len(list(iterate_batches(split, 7, shuffle=True, rank=1, world=2)))
    assert steps0 == steps1 == num_batches(n, 7, world=2)


def test_iterate_batches_start_skips_batches():
    split = tiny_split()
    full = list(iterate_batches(split, 7, shuffle=True, seed=2, epoch=5, augment=True))
    tail = list(iterate_batches(split, 7, shuffle=True, seed=2, epoch=5, augment=True, start=3))
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], tail):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)  # augmentation is keyed on the batch index, not the position


def test_augment_batch_shape_and_determinism():
    x = torch.randn(8, 2, 9, 7, generator=torch.Generator().manual_seed(0))
    a = augment_batch(x, torch.Generator().manual_seed(5))
    b = augment_batch(x, torch.Generator().manual_seed(5))
    c = augment_batch(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_augment_batch_identity_without_shift_or_flip():
    x = torch.randn(5, 1, 6, 6)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), shift=0, flip=False), x)


def test_augment_batch_shift_is_a_translation():
    # one bright pixel: after a shift it moves by at most `shift` pixels, or falls off the edge
    x = torch.zeros(16, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0), shift=2, flip=False)
    for img in out[:, 0]:
        (r, c), = torch.nonzero(img).tolist()
        assert abs(r - 4) <= 2 and abs(c - 4) <= 2
    assert out.sum().item() == 16


# ----------------------------------------------------------------------------- validation split

def _indexed_dataset(n_train=200, n_test=30) -> data.Dataset:
    """Every image holds its own index (train: 0..n-1, test: 1000+), so splits can be told apart."""
    def split(lo, n):
        idx = torch.arange(lo, lo + n)
        return Split(idx.float().view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(), idx % 3)
    return data.Dataset("indexed", split(0, n_train), split(1000, n_test), [0.0], [1.0], 3)


def _ids(split: Split) -> list[int]:
    return split.x[:, 0, 0, 0].long().tolist()


@pytest.mark.parametrize("n,expected", [(200, 20), (256, 25), (9, 1), (1, 1), (60_000, 5000), (10**6, 5000)])
def test_default_val_size_is_ten_percent_at_most_5000(n, expected):
    assert data.default_val_size(n) == expected


def test_validation_split_is_disjoint_held_out_and_deterministic():
    ds = _indexed_dataset()
    out = data.with_validation(ds)
    val, train = _ids(out.val), _ids(out.train)
    assert len(val) == 20 and len(train) == 180
    assert not set(val) & set(train)                            # disjoint from what fine-tuning sees
    assert sorted(val + train) == list(range(200))              # nothing lost, nothing added
    assert not set(val) & set(_ids(out.test)) and out.test is ds.test   # the test split untouched
    assert train == sorted(train) and val == sorted(val)        # original order kept
    assert val != list(range(20)) and val != list(range(180, 200))   # drawn, not a slice
    assert torch.equal(out.val.y, torch.tensor(val) % 3)        # labels travel with their images
    again = data.with_validation(_indexed_dataset())
    assert _ids(again.val) == val                               # seeded: the same images every time
    assert _ids(data.with_validation(ds, seed=1).val) != val
    assert ds.val is None and len(ds.train) == 200              # the input is not modified
    assert data.with_validation(out) is out and data.with_validation(out, 20) is out


def test_validation_size_is_honoured_and_checked():
    ds = _indexed_dataset(50)
    assert len(data.with_validation(ds, 7).val) == 7 and len(data.with_validation(ds, 49).train) == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="validation size must be a whole number >= 1"):
            data.with_validation(ds, bad)
    with pytest.raises(ConfigError, match="leaves none of its 50 training images"):
        data.with_validation(ds, 50)
    with pytest.raises(ConfigError, match="already has a validation split of 5"):
        data.with_validation(data.with_validation(ds, 5), 6)


def test_for_selection_puts_the_validation_split_where_methods_evaluate():
    ds = data.with_validation(_indexed_dataset(), 10)
    view = data.for_selection(ds)
    assert view.test is ds.val and view.train is ds.train and view.val is ds.val
    assert data.val_label(ds) == "the validation split (10 images held out of the training split)"
    with pytest.raises(ConfigError, match="no validation split"):
        data.for_selection(_indexed_dataset())
