"""deepshrink.data: the IDX reader, data set specs, normalisation, batching, augmentation."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink import data
from deepshrink.data import Split, augment_batch, iterate_batches, load, num_batches, read_idx
from deepshrink.errors import DataError

from idx_files import idx_bytes, write, write_idx_dir

FASHION = Path(data.DEFAULT_FASHION_DIR)

# ----------------------------------------------------------------------------- helpers
# IDX writers (idx_bytes, write, make_images, write_idx_dir) live in conftest.py

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
    (1024, 1024, 1024),                 # 1 GiB declared: under the cap, caught by the size check
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
