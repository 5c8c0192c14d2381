"""Argument helpers shared by the commands: model and data options, JSON kwargs."""

from __future__ import annotations

import argparse
import json

from .. import data as data_mod
from ..errors import ConfigError, DataError
from ..io import ModelInfo, load_model

__all__ = ["add_model_file_args", "open_model", "parse_kwargs", "load_data_for", "parse_shape"]


def add_model_file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="arch", metavar="NAME",
                   help="architecture for a plain .pt/.pth state dict (zoo name or module:callable)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the file's module:callable architecture to be imported")


def open_model(args, path: str):
    return load_model(path, arch=getattr(args, "arch", None), trust_code=getattr(args, "trust_code", False))


def parse_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--kwargs is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ConfigError("--kwargs must be a JSON object, e.g. '{\"dropout\": 0.1}'")
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected integers like 1,1,28,28") from None
    if not shape or any(v <= 0 for v in shape):
        raise ConfigError(f"--input-shape {text!r}: every dimension must be positive")
    return shape


def load_data_for(info: ModelInfo, spec: str | None, args=None, where: str = "the model file") -> data_mod.Dataset:
    """The data set a model is evaluated on, normalised with the model's own statistics.

    ``spec`` is the user's ``--data``; without it the file's own ``data`` field is used, and a
    ``module:callable`` there is imported only with ``--trust-code`` (from ``args``)."""
    spec = data_mod.spec_from_file(spec, info.data, where, getattr(args, "trust_code", False))
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    if list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"{spec}: images are {list(ds.input_shape)}, the model expects {list(info.input_shape)}")
    return ds
