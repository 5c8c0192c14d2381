"""What every pipeline opens first: a model file (or a Hugging Face folder ``hf:DIR``), and the
data set it is evaluated on.

The data set is the user's spec, else the one the file records (a ``module:callable`` there is
imported only when trusted), normalised with the model's own statistics, its image shape checked
against the model's. A text model (``input`` = tokens) takes ``text:FILE`` data, tokenised with
its own tokenizer (the folder its file records, or ``tokenizer``) to its sequence length.
"""

from __future__ import annotations

import os

from torch import nn

from .. import data as data_mod
from ..data import Dataset
from ..errors import DataError
from ..hf import load_tokenizer
from ..io import ModelInfo, load_model
from ..modelfile import input_kind
from ..text import is_text_spec

__all__ = ["data_for", "open_model_and_data"]


def data_for(info: ModelInfo, spec: str | None, where: str = "the model file", trust_code: bool = False) -> Dataset:
    """The data set ``info``'s model is evaluated on: ``spec``, else the file's own ``data`` field."""
    if input_kind(info) == "tokens":
        return _text_for(info, spec or info.data, where)
    spec = data_mod.spec_from_file(spec, info.data, where, trust_code)
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    if info.mean is None and info.std is None and not info.history:
        # a record that never saw data (a plain state dict): the data says the input it takes, and
        # files written from the model remember it
        info.input_shape, info.mean, info.std = list(ds.input_shape), list(ds.mean), list(ds.std)
        info.data = info.data or spec
    if list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"{spec}: images are {list(ds.input_shape)}, the model expects {list(info.input_shape)}")
    return ds


def _text_for(info: ModelInfo, spec: str | None, where: str) -> Dataset:
    """``text:FILE`` for a text model: its tokenizer, its pad id, its sequence length."""
    if not spec or not is_text_spec(spec):
        raise DataError(f"{where}: a text model takes text data: pass --data text:FILE (one sentence a line)"
                        + (f", not {spec!r}" if spec else ""))
    if len(info.input_shape) != 1:
        raise DataError(f"{where}: a text model's input_shape is [sequence length], got {info.input_shape}")
    folder = info.extra.get("tokenizer")
    if folder is None:
        raise DataError(f"{where}: records no tokenizer; pass --tokenizer DIR (the model's tokenizer folder)")
    tok = load_tokenizer(folder)
    pad = info.kwargs.get("pad_id") if isinstance(info.kwargs, dict) else None
    if isinstance(pad, int) and tok.pad_token_id != pad:
        raise DataError(f"{folder}: the tokenizer pads with id {tok.pad_token_id}, the model {where} masks id {pad}")
    ds = data_mod.load(spec, tokenizer=tok, seq_len=info.input_shape[0])
    if info.data is None:
        info.data = spec      # recorded: a file written from this model knows its data
    return ds


def open_model_and_data(src: str | os.PathLike, data: str | None = None, arch: str | None = None,
                        trust_code: bool = False, *, seq_len: int | None = None,
                        tokenizer: str | os.PathLike | None = None,
                        need_labels: bool = True, model_kwargs: dict | None = None) -> tuple[nn.Module, ModelInfo, Dataset]:
    """``(model, info, data set)`` of a model file or ``hf:DIR``; ``arch`` names the architecture of
    a plain state dict (naming a callable trusts it); ``seq_len``/``tokenizer``: text models only
    (see :func:`deepshrink.io.load_model`). ``need_labels`` (the default, for a pipeline that
    fine-tunes or reports accuracy): unlabelled data (text) is one DataError, never a number
    measured against placeholder labels; a pipeline that handles unlabelled data passes False."""
    model, info = load_model(src, arch=arch, kwargs=model_kwargs, trust_code=trust_code, seq_len=seq_len,
                             tokenizer=tokenizer)
    ds = data_for(info, data, str(src), trust_code)
    if need_labels and not ds.labelled:
        raise DataError(f"{ds.name}: text has no labels, and this command fine-tunes or reports accuracy, which "
                        "need them; measure an unlabelled model by its agreement with the original: "
                        "deepshrink evaluate FILE --reference ORIGINAL")
    return model, info, ds
