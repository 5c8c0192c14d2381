"""``deepshrink conv-table`` as one call: the convolution-algorithm table
(:mod:`deepshrink.convalgo.table`) of every Conv2d of a model file.

The model runs one forward on a seeded standard-normal input of ``batch_size`` samples of the
file's input shape (token ids for a text model), which gives every conv layer its real input;
on it each algorithm (direct loop, im2col, kn2row, Winograd F(2x2, 3x3), FFT) is checked against
``F.conv2d`` (max abs error), its workspace predicted by formula and measured (peak bytes through
torch's CPU allocator), and timed (median of ``repeats``, on ``threads``).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field

import torch

from ..convalgo.table import COLUMN_MEANS, LayerTable, conv_table, summarize
from ..errors import ConfigError
from ..io import load_model
from ..modelfile import example_input, input_kind
from .profile import MAX_INPUT_ELEMENTS

__all__ = ["ConvTableRun", "conv_table_file", "INPUT_SEED"]

INPUT_SEED = 0


@dataclass
class ConvTableRun:
    label: str                          # the file as given
    input_shape: list[int]              # the model's input, batch included
    repeats: int
    threads: int
    layers: list[LayerTable] = field(default_factory=list)
    input: str = f"standard normal, seed {INPUT_SEED}"   # what the model was fed

    def summary(self) -> dict:
        return summarize(self.layers)

    def to_dict(self) -> dict:
        return {"model": self.label, "input_shape": self.input_shape, "input": self.input,
                "repeats": self.repeats, "threads": self.threads, "means": COLUMN_MEANS,
                "layers": [layer.to_dict() for layer in self.layers], "summary": self.summary()}


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def conv_table_file(src: str | os.PathLike, *, arch: str | None = None, batch_size: int = 1, repeats: int = 5,
                    threads: int | None = None, trust_code: bool = False, model_kwargs: dict | None = None,
                    seq_len: int | None = None, tokenizer: str | os.PathLike | None = None) -> ConvTableRun:
    """The table of every Conv2d of the model in ``src`` (``arch``: a plain state dict's architecture)."""
    for value, flag in ((batch_size, "--batch-size"), (repeats, "--repeats")):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: must be >= 1")
    model, info = load_model(src, arch=arch, kwargs=model_kwargs, trust_code=trust_code, seq_len=seq_len,
                             tokenizer=tokenizer)
    shape = (batch_size, *info.input_shape)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ConfigError(f"--batch-size {batch_size}: an input of {math.prod(shape):,} elements, more than the "
                          f"{MAX_INPUT_ELEMENTS:,} allowed")
    tokens = input_kind(info) == "tokens"
    if tokens:
        x = example_input(info, shape)
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(INPUT_SEED))
    model.eval()
    with _threads(threads) as n:
        layers = conv_table(model, x, repeats)
    return ConvTableRun(os.fspath(src), list(shape), repeats, n, layers,
                        **({"input": "token ids filling the sequence"} if tokens else {}))
