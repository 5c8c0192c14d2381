"""The schema of a model file's metadata record, checked once when the record is read.

A model file (``.safetensors`` metadata or a ``.dsz`` header's ``model`` field) carries one JSON
record: the architecture, its kwargs, the input shape, normalisation statistics, accuracy, data
spec, history and extras. Everything in it is untrusted input: this module checks every field's
type and range, and the nesting depth of the whole record, before anything uses it, so a bad
record is one :class:`~deepshrink.errors.FormatError` naming the field instead of a traceback
somewhere later (or a record that cannot be written back).

Nothing here imports code: the ``arch`` and ``data`` fields are only checked to be strings; the
trust rule for ``module:callable`` values lives where they would be imported (``io.build_arch``,
``data.spec_from_file``).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from .errors import FormatError
from .hf import HF_PREFIX, KWARG_KEYS
from .train import TrainConfig

__all__ = ["MAX_DEPTH", "MAX_INPUT_ELEMENTS", "MAX_TEXT", "INPUT_KINDS", "check_record", "depth"]

INPUT_KINDS = ("images", "tokens")    # extra["input"]: float images/features, or int64 token ids

MAX_DEPTH = 32                  # nesting of objects and lists in the whole record
MAX_TEXT = 4096                 # arch and data strings
MAX_INPUT_ELEMENTS = 1 << 26    # one input sample: 64 Mi values (a 3x4096x4096 image is 50 Mi)
MAX_INPUT_DIM = 1 << 20
MAX_CHANNELS = 4096             # entries of mean / std
MAX_HISTORY = 10_000


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a JSON value (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > limit:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(raw: dict, key: str, where: str, optional: bool) -> None:
    v = raw.get(key)
    if v is None and optional:
        return
    if not isinstance(v, str) or not 0 < len(v) <= MAX_TEXT:
        raise FormatError(f"{where}: metadata field {key!r} must be a string of 1..{MAX_TEXT} characters, "
                          f"got {_show(v)}")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _input_shape(v: Any, where: str) -> None:
    if (not isinstance(v, list) or not 1 <= len(v) <= 8
            or not all(type(d) is int and 1 <= d <= MAX_INPUT_DIM for d in v)):
        raise FormatError(f"{where}: metadata field 'input_shape' must be a list of 1..8 positive ints, got {_show(v)}")
    if math.prod(v) > MAX_INPUT_ELEMENTS:
        raise FormatError(f"{where}: metadata field 'input_shape' {v} has {math.prod(v)} values per sample, "
                          f"more than {MAX_INPUT_ELEMENTS}")


def _stats(raw: dict, key: str, where: str, positive: bool) -> None:
    v = raw.get(key)
    if v is None:
        return
    if (not isinstance(v, list) or not 1 <= len(v) <= MAX_CHANNELS or not all(_number(x) for x in v)
            or (positive and not all(x > 0 for x in v))):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise FormatError(f"{where}: metadata field {key!r} must be null or a list of 1..{MAX_CHANNELS} {kind}, "
                          f"got {_show(v)}")


def _history(v: Any, where: str) -> None:
    if not isinstance(v, list) or len(v) > MAX_HISTORY:
        raise FormatError(f"{where}: metadata field 'history' must be a list of at most {MAX_HISTORY} objects")
    for i, h in enumerate(v):
        if not isinstance(h, dict):
            raise FormatError(f"{where}: metadata field 'history[{i}]' must be an object, got {_show(h)}")
        if "op" in h and not isinstance(h["op"], str):
            raise FormatError(f"{where}: metadata field 'history[{i}].op' must be a string, got {_show(h['op'])}")
        if "config" in h and not isinstance(h["config"], dict):
            raise FormatError(f"{where}: metadata field 'history[{i}].config' must be an object, "
                              f"got {_show(h['config'])}")
        if h.get("op") == "train":
            _train_config(h.get("config", {}), f"history[{i}].config", where)


def _train_config(cfg: dict, label: str, where: str) -> None:
    """The recorded training settings are reused when fine-tuning: each known one has its field's type."""
    for f in fields(TrainConfig):
        if f.name not in cfg:
            continue
        v, default = cfg[f.name], getattr(TrainConfig(), f.name)
        if isinstance(default, bool) or default is None:
            ok = isinstance(v, bool) or (default is None and (v is None or isinstance(v, str)))
        elif isinstance(default, (int, float)):
            ok = _number(v) and (isinstance(default, float) or type(v) is int)
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise FormatError(f"{where}: metadata field '{label}.{f.name}' has the wrong type: {_show(v)}")


def _extra(v: Any, where: str) -> None:
    if not isinstance(v, dict):
        raise FormatError(f"{where}: metadata field 'extra' must be an object, got {_show(v)}")
    quant = v.get("quant")
    if quant is not None and not (isinstance(quant, dict) and isinstance(quant.get("method"), str)
                                  and isinstance(quant.get("config", {}), dict)):
        raise FormatError(f"{where}: metadata field 'extra.quant' must be an object with a string 'method' "
                          f"and an object 'config', got {_show(quant)}")
    if "quant" in v and quant is None:
        raise FormatError(f"{where}: metadata field 'extra.quant' must be an object, got null")
    for key in ("channel_plan", "head_plan"):
        plan = v.get(key)
        if plan is not None and not isinstance(plan, dict):
            raise FormatError(f"{where}: metadata field 'extra.{key}' must be an object, got {_show(plan)}")
    if "input" in v and v["input"] not in INPUT_KINDS:
        raise FormatError(f"{where}: metadata field 'extra.input' must be one of {list(INPUT_KINDS)}, "
                          f"got {_show(v['input'])}")
    tok = v.get("tokenizer")
    if tok is not None and not (isinstance(tok, str) and 0 < len(tok) <= MAX_TEXT):
        raise FormatError(f"{where}: metadata field 'extra.tokenizer' must be a folder name of 1..{MAX_TEXT} "
                          f"characters, got {_show(tok)}")


def _hf_kwargs(arch: str, kwargs: dict, where: str) -> None:
    """A Hugging Face record: a transformers class name, ``{"config": {...}, "pad_id": int}``, and a
    config that asks for no remote code (the class itself is checked where it is built)."""
    if not arch[len(HF_PREFIX):].isidentifier():
        raise FormatError(f"{where}: metadata field 'arch' {_show(arch)} must be hf:<transformers class name>")
    unknown = sorted(set(kwargs) - set(KWARG_KEYS))
    if unknown:
        raise FormatError(f"{where}: metadata field 'kwargs' of {arch} has unknown keys {unknown}")
    config = kwargs.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"{where}: metadata field 'kwargs.config' must be an object, got {_show(config)}")
    if "auto_map" in config:
        raise FormatError(f"{where}: metadata field 'kwargs.config' declares 'auto_map' (remote code); "
                          "deepshrink never runs a model's own code")
    pad = kwargs.get("pad_id", 0)
    if type(pad) is not int or pad < 0:
        raise FormatError(f"{where}: metadata field 'kwargs.pad_id' must be a non-negative int, got {_show(pad)}")


def check_record(raw: dict, where: str) -> None:
    """Check a decoded metadata record (the known fields only); FormatError names the first bad field."""
    if depth(raw) > MAX_DEPTH:
        raise FormatError(f"{where}: metadata is nested more than {MAX_DEPTH} levels deep")
    _text(raw, "arch", where, optional=False)
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise FormatError(f"{where}: metadata field 'kwargs' must be an object, got {_show(kwargs)}")
    if raw["arch"].startswith(HF_PREFIX):
        _hf_kwargs(raw["arch"], kwargs, where)
    if "input_shape" in raw:
        _input_shape(raw["input_shape"], where)
    _stats(raw, "mean", where, positive=False)
    _stats(raw, "std", where, positive=True)
    acc = raw.get("accuracy")
    if acc is not None and not (_number(acc) and 0 <= acc <= 1):
        raise FormatError(f"{where}: metadata field 'accuracy' must be null or a number in [0, 1], got {_show(acc)}")
    _text(raw, "data", where, optional=True)
    _history(raw.get("history", []), where)
    _extra(raw.get("extra", {}), where)
