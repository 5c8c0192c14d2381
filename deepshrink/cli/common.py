"""Argument helpers shared by the commands: model and data options, JSON kwargs, checked
numbers and output paths (both refused before any file is read or any work is done)."""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from .. import data as data_mod
from ..errors import ConfigError, DataError
from ..io import ModelInfo, load_model

__all__ = ["add_model_file_args", "open_model", "parse_kwargs", "load_data_for", "parse_shape",
           "check_input_elements", "MAX_INPUT_ELEMENTS", "float_option", "FINITE", "POSITIVE", "NON_NEGATIVE",
           "FRACTION", "FRACTION_BELOW_ONE", "check_output_path", "check_output_dir"]

# An example input larger than this is refused before it is allocated: 2^24 float32 elements are
# 64 MiB, and the widest layer's activations multiply that (64 channels: 4 GiB).
MAX_INPUT_ELEMENTS = 2 ** 24


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
    check_input_elements(shape, f"--input-shape {text!r}")
    return shape


def check_input_elements(shape, what: str) -> None:
    """Refuse an example input of more than :data:`MAX_INPUT_ELEMENTS` elements (before allocating it)."""
    n = math.prod(shape)
    if n > MAX_INPUT_ELEMENTS:
        raise ConfigError(f"{what}: {n:,} elements, more than the {MAX_INPUT_ELEMENTS:,} allowed "
                          "(profiling counts per-sample costs: use batch 1)")


# ----------------------------------------------------------------------------- checked numbers

def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def parse_float(text: str, flag: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``text`` as a finite float within the bounds, else one ConfigError naming ``flag``.
    NaN is refused explicitly: it passes every ``x < lo`` test."""
    want = " ".join(["a finite number", _range_text(lo, hi, lo_open, hi_open)]).strip()
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {text!r}: expected {want}") from None
    if (not math.isfinite(value)
            or (lo is not None and (value <= lo if lo_open else value < lo))
            or (hi is not None and (value >= hi if hi_open else value > hi))):
        raise ConfigError(f"{flag} {text!r}: must be {want}")
    return value


def float_option(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> type[argparse.Action]:
    """An argparse action (``action=``) storing a finite float within the bounds.

    An action rather than ``type=``: it knows the option's name, so a bad value is one
    ``deepshrink: error: --flag 'nan': must be ...`` line (a ConfigError), like every other user
    error, instead of argparse's usage block. Defaults are not checked (they are ours)."""

    class CheckedFloat(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest,
                    parse_float(values, option_string or self.dest, lo, hi, lo_open=lo_open, hi_open=hi_open))

    return CheckedFloat


FINITE = float_option()                                  # any finite number (range checked elsewhere)
POSITIVE = float_option(0, lo_open=True)                 # learning rates, temperatures
NON_NEGATIVE = float_option(0)                           # epochs, weight decay, budgets
FRACTION = float_option(0, 1)                            # weights such as alpha
FRACTION_BELOW_ONE = float_option(0, 1, hi_open=True)    # sparsity, label smoothing


# ----------------------------------------------------------------------------- output paths

def _stat(p: Path, path: str):
    """os.stat of ``p``, None when it (or a folder above it) does not exist."""
    try:
        return os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot inspect {p} ({exc.strerror or exc})") from None


def _check_parents(p: Path, path: str) -> None:
    """The nearest existing folder above ``p`` must be a folder we can create files in (a parent
    that does not exist yet is left to the command: most create it, some refuse)."""
    for parent in p.absolute().parents:
        st = _stat(parent, path)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: {parent} is a file, not a folder")
        _probe_writable(parent, path)
        return


def _probe_writable(folder: Path, path: str) -> None:
    # os.access says yes to root everywhere (even under /proc): really create, then remove, a file
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepshrink-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def check_output_path(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse an output file path that cannot be written, before any work: empty, a folder,
    not a regular file (a device, a pipe), under a regular file, or in a folder we cannot write.
    ``None`` (an optional output not given) passes."""
    if path is None:
        return
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"{flag} {text!r}: the path is empty")
    if text.endswith(("/", os.sep)):
        raise ConfigError(f"{text}: names a folder (ends with '/'), where {flag} needs a file")
    p = Path(text)
    st = _stat(p, text)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{text}: is a folder, where {flag} needs a file")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{text}: exists and is not a regular file; {flag} would replace it")
    _check_parents(p, text)


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """Refuse an output folder that cannot be created or written: empty, an existing file, under
    a regular file, or in a folder we cannot write. ``None`` passes."""
    if path is None:
        return
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"{flag} {text!r}: the path is empty")
    p = Path(text)
    st = _stat(p, text)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{text}: exists and is not a folder, where {flag} needs a folder")
    if st is not None:
        _probe_writable(p, text)
    else:
        _check_parents(p, text)


def load_data_for(info: ModelInfo, spec: str | None, args=None, where: str = "the model file") -> data_mod.Dataset:
    """The data set a model is evaluated on, normalised with the model's own statistics.

    ``spec`` is the user's ``--data``; without it the file's own ``data`` field is used, and a
    ``module:callable`` there is imported only with ``--trust-code`` (from ``args``)."""
    spec = data_mod.spec_from_file(spec, info.data, where, getattr(args, "trust_code", False))
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    if list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"{spec}: images are {list(ds.input_shape)}, the model expects {list(info.input_shape)}")
    return ds
