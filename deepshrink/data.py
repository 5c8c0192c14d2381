"""Data sets held whole in memory, and a fast seeded batch iterator.

Specs (``--data SPEC``):

* ``fashion-mnist``   the Debian package ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist``, or the folder in ``$DEEPSHRINK_DATA``);
* ``idx:DIR``         any folder of IDX files named like MNIST's (``train-images*``, ...);
* ``npz:FILE``        arrays ``x_train, y_train, x_test, y_test`` (Keras' mnist.npz layout);
* ``module:callable`` a function returning ``(train, test)``, each a ``(x, y)`` pair of
  arrays/tensors or an indexable data set of ``(x, y)`` items. The user names the code;
* ``text:FILE``       one sentence a line (:mod:`deepshrink.text`), tokenised with the model's own
  tokenizer to int64 ids ``(N, seq_len)``; unlabelled (``Dataset.labelled`` is False).

IDX files are read by :mod:`deepshrink.idx`; batches and augmentation are :mod:`deepshrink.batches`
(both re-exported here).

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

Validation (honest selection): :func:`with_validation` carves a seeded validation split from the
training split (default 10%, at most 5,000 images) and trains on the rest; every choice is made on
it, and the test split reports once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .batches import augment_batch, iterate_batches, num_batches
from .errors import ConfigError, DataError, DeepShrinkError, first_line
from .hf import DEFAULT_SEQ_LEN, check_seq_len, load_tokenizer, tokenize
from .idx import MAX_IDX_BYTES, max_idx_bytes, read_idx
from .text import is_text_spec, read_lines, split_indices
from .usercode import import_callable

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
    "VAL_FRACTION",
    "MAX_VAL_IMAGES",
    "VAL_SEED",
    "default_val_size",
    "check_val_size",
    "with_validation",
    "for_selection",
    "val_label",
]

DEFAULT_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install it with: apt-get install dataset-fashion-mnist (or set DEEPSHRINK_DATA)"
MAX_CLASSES = 100_000  # labels are class indices 0 .. MAX_CLASSES - 1

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


@dataclass
class Dataset:
    """Train and test splits, normalised with ``mean``/``std`` (per channel); ``val``: the
    validation split carved from the training split by :func:`with_validation` (None until then)."""

    name: str
    train: Split
    test: Split
    mean: list[float]
    std: list[float]
    num_classes: int
    val: Split | None = None
    labelled: bool = True       # False for text: ``y`` is a placeholder (zeros), accuracy means nothing

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


# ----------------------------------------------------------------------------- validation split
# Honest selection: every choice (a sensitivity scan, an accuracy budget and its retries, a bit
# allocation, a threshold) is made on images carved from the training split and held out of the
# fine-tuning; the test split gives the reported figure, once. The carve is a seeded permutation:
# every command that holds out images of one data set holds out the same ones.

VAL_FRACTION = 0.1        # the validation split: this fraction of the training split ...
MAX_VAL_IMAGES = 5000     # ... at most this many images
VAL_SEED = 0              # the carve's seed, the same for every command


def default_val_size(n_train: int) -> int:
    """The default validation size: 10% of ``n_train`` training images, at most 5,000, at least 1."""
    return max(1, min(MAX_VAL_IMAGES, int(n_train * VAL_FRACTION)))


def check_val_size(size: int | None, what: str = "validation size") -> None:
    """``None`` (the default size) or a whole number >= 1; ``what`` names the option in the error."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"{what} must be a whole number >= 1, got {size!r}: the validation split makes every "
                          "choice, and the test split is never used for one")


def with_validation(ds: Dataset, size: int | None = None, seed: int = VAL_SEED) -> Dataset:
    """A new Dataset with ``size`` training images (default :func:`default_val_size`) moved to ``val``.

    The images are the first ``size`` of a permutation seeded with ``seed``; ``train`` keeps the
    rest in their original order, so fine-tuning on it never sees a validation image. A data set
    that already has a validation split of that size (or ``size`` None) is returned unchanged.
    """
    check_val_size(size)
    n = len(ds.train)
    if ds.val is not None:
        if size is None or size == len(ds.val):
            return ds
        raise ConfigError(f"{ds.name}: already has a validation split of {len(ds.val)} images, not {size}")
    k = default_val_size(n) if size is None else size
    if k >= n:
        raise ConfigError(f"{ds.name}: a validation split of {k} images leaves none of its {n} training images "
                          "for fine-tuning; give a smaller validation size (--val-size)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = order[:k].sort().values                       # (k,) indices into the training split
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    return replace(ds, train=Split(ds.train.x[keep], ds.train.y[keep]),
                   val=Split(ds.train.x[held], ds.train.y[held]))


def for_selection(ds: Dataset) -> Dataset:
    """The view a choice is made on: ``train`` (the images left after the validation split) with
    ``val`` standing in for ``test``. The training and pruning routines evaluate on ``.test``; handed
    this view, every accuracy they return (and steer by) is a validation accuracy."""
    if ds.val is None:
        raise ConfigError(f"{ds.name}: no validation split; carve one with with_validation first")
    return replace(ds, test=ds.val)


def val_label(ds: Dataset) -> str:
    """Which images a validation accuracy comes from, for printed lines and reports."""
    if ds.val is None:
        raise ConfigError(f"{ds.name}: no validation split; carve one with with_validation first")
    what = "images" if ds.labelled else "samples"
    return f"the validation split ({len(ds.val)} {what} held out of the training split)"


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
    fn = import_callable(spec, DataError, "data factory")
    try:
        out = fn()
    except DeepShrinkError:
        raise
    except Exception as exc:  # the factory's own failure: a missing file, a bad argument ...
        raise DataError(f"{spec}: the data factory failed ({type(exc).__name__}: {first_line(exc)})") from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise DataError(f"{spec}: must return (train, test), got {type(out).__name__}")
    xs, ys = _as_arrays(out[0], "train", spec)
    xt, yt = _as_arrays(out[1], "test", spec)
    return xs, ys, xt, yt


def is_code_spec(spec: str) -> bool:
    """True when loading ``spec`` would import and call code (a ``module:callable`` spec)."""
    return spec != "fashion-mnist" and not spec.startswith(("idx:", "npz:", "text:")) and ":" in spec


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


def _from_text(spec: str, tokenizer, seq_len: int | None) -> Dataset:
    """``text:FILE`` as token ids: train and test carved from the lines (:func:`deepshrink.text.split_indices`)."""
    if tokenizer is None:
        raise DataError(f"{spec}: text is tokenised with the model's own tokenizer, and none is known: open it "
                        "with a Hugging Face model (hf:DIR, or a file written from one) or pass --tokenizer DIR")
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
    lines = read_lines(spec[len("text:"):])
    ids = tokenize(tok, lines, check_seq_len(DEFAULT_SEQ_LEN if seq_len is None else seq_len, "--seq-len"))
    train, test = split_indices(len(ids))                               # (N, L) int64 ids
    zeros = torch.zeros(len(ids), dtype=torch.int64)                    # no labels: a placeholder
    return Dataset(spec, Split(ids[train], zeros[train]), Split(ids[test], zeros[test]), [], [], 0,
                   labelled=False)


def load(spec: str = "fashion-mnist", mean=None, std=None, *, tokenizer=None, seq_len: int | None = None) -> Dataset:
    """Load a data set by spec; normalise with the given stats or the training split's.
    ``text:FILE`` only: ``tokenizer`` (a folder or a loaded tokenizer) and ``seq_len`` (default 128)."""
    if is_text_spec(spec):
        return _from_text(spec, tokenizer, seq_len)
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
            f"unknown data spec {spec!r}: use fashion-mnist, idx:DIR, npz:FILE, text:FILE or module:callable"
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
