"""What every pipeline opens first: a model file, and the data set it is evaluated on.

The data set is the user's spec, else the one the file records (a ``module:callable`` there is
imported only when trusted), normalised with the model's own statistics, its image shape checked
against the model's.
"""

from __future__ import annotations

import os

from torch import nn

from .. import data as data_mod
from ..data import Dataset
from ..errors import DataError
from ..io import ModelInfo, load_model

__all__ = ["data_for", "open_model_and_data"]


def data_for(info: ModelInfo, spec: str | None, where: str = "the model file", trust_code: bool = False) -> Dataset:
    """The data set ``info``'s model is evaluated on: ``spec``, else the file's own ``data`` field."""
    spec = data_mod.spec_from_file(spec, info.data, where, trust_code)
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    if list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"{spec}: images are {list(ds.input_shape)}, the model expects {list(info.input_shape)}")
    return ds


def open_model_and_data(src: str | os.PathLike, data: str | None = None, arch: str | None = None,
                        trust_code: bool = False) -> tuple[nn.Module, ModelInfo, Dataset]:
    """``(model, info, data set)`` of a model file; ``arch`` names the architecture of a plain
    state dict (naming a callable trusts it)."""
    model, info = load_model(src, arch=arch, trust_code=trust_code)
    return model, info, data_for(info, data, str(src), trust_code)
