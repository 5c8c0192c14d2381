"""``text:FILE`` data: one sentence a line, read within bounds and split deterministically.

The file is UTF-8 text; each line (stripped) is one sample and blank lines are skipped. Limits,
so that a large or hostile file fails fast with one line instead of exhausting memory:

* at most ``MAX_TEXT_BYTES`` (64 MiB) — checked on the file's size before it is read
  (``DEEPSHRINK_MAX_TEXT_BYTES`` raises or lowers it);
* at most ``MAX_TEXT_LINES`` (200,000) sentences;
* at least two sentences (a training and a test split).

The test split is a seeded permutation's first 10% of the sentences (at least one), the training split
the rest, both kept in file order; the same file always splits the same way. Sentences are
tokenised with the model's own tokenizer (:func:`deepshrink.hf.tokenize`) by
:func:`deepshrink.data.load`. Text carries no labels: a ``text:`` data set is unlabelled, and
what is measured on it is agreement with a reference model, never accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import DataError
from .limits import env_bytes

__all__ = ["TEXT_PREFIX", "MAX_TEXT_BYTES", "MAX_TEXT_LINES", "TEST_FRACTION", "SPLIT_SEED", "is_text_spec",
           "max_text_bytes", "read_lines", "split_indices"]

TEXT_PREFIX = "text:"
MAX_TEXT_BYTES = 64 << 20          # 64 MiB; DEEPSHRINK_MAX_TEXT_BYTES overrides
MAX_TEXT_BYTES_ENV = "DEEPSHRINK_MAX_TEXT_BYTES"
MAX_TEXT_LINES = 200_000
TEST_FRACTION = 0.1                # of the sentences, at least one
SPLIT_SEED = 0


def is_text_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(TEXT_PREFIX)


def max_text_bytes() -> int:
    """``$DEEPSHRINK_MAX_TEXT_BYTES`` if set (a positive whole number), else ``MAX_TEXT_BYTES``."""
    return env_bytes(MAX_TEXT_BYTES_ENV, MAX_TEXT_BYTES)


def read_lines(path: str | os.PathLike, max_lines: int = MAX_TEXT_LINES) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; every limit one DataError naming the file."""
    path, limit = Path(path), max_text_bytes()
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise DataError(f"{path}: {size} bytes, more than the {limit} a text file may hold "
                                f"(set {MAX_TEXT_BYTES_ENV} to allow more)")
            blob = fh.read(limit + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(blob) > limit:  # grew since, or not a regular file
        raise DataError(f"{path}: more than the {limit} bytes a text file may hold")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            if len(lines) == max_lines:
                raise DataError(f"{path}: more than {max_lines} sentences (one a line); use a smaller file")
            lines.append(line)
    if len(lines) < 2:
        raise DataError(f"{path}: {len(lines)} sentence(s); text data needs at least 2 (training and test)")
    return lines


def split_indices(n: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` indices of ``n`` >= 2 samples: the test split is the first
    10% (at least one) of a permutation seeded with ``seed``; both sorted (file order)."""
    k = max(1, int(n * TEST_FRACTION))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test = order[:k].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[test] = False
    return keep.nonzero().flatten(), test
