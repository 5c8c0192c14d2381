"""Argument helpers shared by the commands: model-file options, JSON kwargs, checked numbers,
output paths (both refused before any file is read or any work is done) and the options of a
sensitivity scan (``sensitivity``, ``prune --auto``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..pipelines.profile import check_input_elements
from ..pipelines.sensitivity import EVAL_ON, ScanConfig, scan_files

__all__ = ["add_model_file_args", "model_file_options", "parse_kwargs", "parse_shape", "float_option", "FINITE",
           "POSITIVE", "NON_NEGATIVE", "FRACTION", "FRACTION_BELOW_ONE", "check_output_path", "check_output_dir",
           "add_eval_args", "check_eval_args", "check_scan_outputs"]


def add_model_file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="arch", metavar="NAME",
                   help="architecture for a plain .pt/.pth state dict (zoo name or module:callable)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the file's module:callable architecture to be imported")


def model_file_options(args) -> dict:
    """``arch`` and ``trust_code`` for a pipeline call, from :func:`add_model_file_args`' options."""
    return {"arch": getattr(args, "arch", None), "trust_code": getattr(args, "trust_code", False)}


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
    check_input_elements(shape, f"--input-shape {text!r}")  # refused before it is allocated
    return shape


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


# ----------------------------------------------------------------------------- sensitivity scans

def add_eval_args(p) -> None:
    """``--eval`` and ``--eval-size``: where a scan evaluates (sensitivity, prune --auto)."""
    p.add_argument("--eval", choices=EVAL_ON, default=ScanConfig.eval_on,
                   help="scan on the last --eval-size training images (default: keeps the test split "
                        "out of the choice; they were seen in training, so accuracies read higher) or the test split")
    p.add_argument("--eval-size", type=int, default=ScanConfig.eval_size,
                   help="images in the training slice (default: %(default)s)")


def check_eval_args(args) -> None:
    if args.eval == "train-slice" and args.eval_size < 1:
        raise ConfigError(f"--eval-size must be >= 1, got {args.eval_size}")


def check_scan_outputs(out_dir: str, flag: str) -> None:
    """The folder a sensitivity scan writes (as typed: ``Path('')`` would read as ``.``), and its two files."""
    check_output_dir(out_dir, flag)
    for path in scan_files(out_dir):
        check_output_path(path, flag)
