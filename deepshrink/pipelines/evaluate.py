"""``deepshrink evaluate`` as one call: the test accuracy of a model file, on the data set it
records (normalised with its own statistics) or on another of the same image shape."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import data as data_mod
from ..train import evaluate
from .inputs import open_model_and_data

__all__ = ["EvaluateRun", "evaluate_file"]


@dataclass
class EvaluateRun:
    accuracy: float                     # on the test split, in [0, 1]
    data: str                           # the data spec evaluated on
    images: int                         # test images


def evaluate_file(src: str | os.PathLike, *, data: str | None = None, arch: str | None = None,
                  trust_code: bool = False) -> EvaluateRun:
    model, info, ds = open_model_and_data(src, data, arch, trust_code)
    spec = data_mod.spec_from_file(data, info.data, os.fspath(src), trust_code)
    return EvaluateRun(evaluate(model, ds.test), spec, len(ds.test))
