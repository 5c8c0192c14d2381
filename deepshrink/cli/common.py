"""Argument helpers shared by the commands: model-file options, JSON kwargs, checked numbers,
output paths (both refused before any file is read or any work is done; a missing folder is
created by every command), the validation split of every command that makes a choice
(``--val-size``), the augmentation and LR of every command that fine-tunes (``--augment on|off``,
``--lr``), ``--json`` output, and the import of a ``module:callable`` typed on the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from ..data import MAX_VAL_IMAGES, VAL_FRACTION, check_val_size, is_code_spec
from ..errors import ConfigError, DataError, DeepShrinkError, ModelError
from ..hf import DEFAULT_SEQ_LEN, check_seq_len, is_hf_spec
from ..pipelines import defaults
from ..pipelines.profile import check_input_elements
from ..pipelines.sensitivity import scan_files
from ..usercode import import_user_module
from .parser import add_option

__all__ = ["add_model_file_args", "model_file_options", "parse_kwargs", "parse_shape", "float_option", "FINITE",
           "POSITIVE", "NON_NEGATIVE", "FRACTION", "FRACTION_BELOW_ONE", "check_output_path", "check_output_dir",
           "add_val_size_arg", "check_val_size_arg", "add_augment_arg", "augment_choice", "check_scan_outputs",
           "add_target_args", "target_globs", "add_out_arg", "add_lr_arg", "add_seed_arg", "add_progress_arg", "add_run_args",
           "add_json_arg", "json_output", "print_json", "output_facts", "import_from_cwd", "import_typed_code",
           "LR_DEFAULTS"]


def add_model_file_args(p: argparse.ArgumentParser, kwargs: bool = True) -> None:
    """``--model``, ``--kwargs`` (its constructor's arguments; not where a command's own ``--kwargs``
    means something else), ``--trust-code``, and for text models ``--seq-len`` and ``--tokenizer``. A
    model file argument may also be ``hf:DIR``, a local Hugging Face model folder (offline, no remote
    code)."""
    p.add_argument("--model", dest="arch", metavar="NAME",
                   help="architecture for a plain .pt/.pth/.safetensors state dict (zoo name, module:callable, or "
                        "hf:DIR: a Hugging Face folder's config); a model argument may itself be hf:DIR; a "
                        "module:callable named here may live in the current folder (default: the one the file "
                        "records)")
    if kwargs:
        p.add_argument("--kwargs", dest="model_kwargs", metavar="JSON",
                       help="JSON arguments of --model's architecture, e.g. '{\"input_size\": 28}' (default: "
                            "none: the file's, else the constructor's defaults)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the file's module:callable architecture to be imported")
    p.add_argument("--seq-len", dest="seq_len", type=int, metavar="N",
                   help=f"text models: tokens per sentence, padded or truncated (default: the file's; "
                        f"{DEFAULT_SEQ_LEN} for hf:DIR)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="text models: the tokenizer folder for text:FILE data (default: the one the model records)")


def model_file_options(args) -> dict:
    """``arch`` and ``trust_code`` for a pipeline call, from :func:`add_model_file_args`' options, and
    ``seq_len``/``tokenizer`` when given (checked here, before any file is read). A ``module:callable``
    typed in ``--model`` or ``--data`` is imported here, from the current folder too
    (:func:`import_from_cwd`)."""
    opts = {"arch": getattr(args, "arch", None), "trust_code": getattr(args, "trust_code", False)}
    import_typed_code(args)
    if getattr(args, "model_kwargs", None):
        if opts["arch"] is None:
            raise ConfigError("--kwargs gives the arguments of --model's architecture: name it with --model")
        opts["model_kwargs"] = parse_kwargs(args.model_kwargs)
    if getattr(args, "seq_len", None) is not None:
        opts["seq_len"] = check_seq_len(args.seq_len, "--seq-len")
    if getattr(args, "tokenizer", None) is not None:
        opts["tokenizer"] = args.tokenizer
    return opts


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
    """The nearest existing folder above ``p`` must be a folder we can create files in (the
    folders that do not exist yet are created by the command, every command alike)."""
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


# ----------------------------------------------------------------------------- validation and augmentation

class _Removed(argparse.Action):
    """A removed option: one error line saying what replaced it."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise ConfigError(f"{option_string} was removed: choices are made on the validation split carved from "
                          "the training data (--val-size N), never on the test split")


def add_val_size_arg(p, what: str, aliases: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> None:
    """``--val-size N``: the validation split on which ``what`` (e.g. "the scan is measured").
    ``aliases``: its old names, hidden; ``removed``: old options that chose another split, refused
    with a line saying why."""
    add_option(p, "--val-size", aliases=aliases, dest="val_size", type=int, metavar="N",
               help=f"validation images carved from the training split (seeded) on which {what}; they are "
                    "held out of the fine-tuning, and the test split only gives the reported accuracy "
                    f"(default: {VAL_FRACTION:.0%}% of the training split, at most {MAX_VAL_IMAGES:,})")
    for old in removed:
        p.add_argument(old, action=_Removed, help=argparse.SUPPRESS)


def check_val_size_arg(args) -> None:
    """``--val-size`` before any file is read: whole and >= 1 (0 is refused, never the test split)."""
    check_val_size(args.val_size, "--val-size")


def add_augment_arg(p, default: str = "as the model was trained: off when its file records no training") -> None:
    """``--augment on|off``: random shifts and flips while fine-tuning."""
    p.add_argument("--augment", choices=("on", "off"),
                   help=f"random 2-pixel shifts and horizontal flips while training (default: {default})")


def augment_choice(args) -> bool | None:
    """``--augment`` as a :class:`~deepshrink.pipelines.defaults.Finetune` field (None: the default)."""
    value = getattr(args, "augment", None)
    return None if value is None else value == "on"


def check_scan_outputs(out_dir: str, flag: str) -> None:
    """The folder a sensitivity scan writes (as typed: ``Path('')`` would read as ``.``), and its two files."""
    check_output_dir(out_dir, flag)
    for path in scan_files(out_dir):
        check_output_path(path, flag)


# ----------------------------------------------------------------------------- pruning targets

def add_target_args(p) -> None:
    """``--include GLOB`` / ``--exclude GLOB`` (repeatable): weights added to / removed from the
    default pruning targets (:mod:`deepshrink.targets`)."""
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="also prune the weights whose parameter or module name matches (fnmatch, repeatable), "
                        "e.g. 'fc3' or 'embeddings.word_embeddings'; by default every Linear/Conv weight is "
                        "pruned except the output layer's (the last Linear/Conv in module order)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave the matching weights dense (repeatable; wins over --include), "
                        "e.g. 'encoder.layer.0.*' (default: none)")


def target_globs(args) -> dict:
    """``include`` and ``exclude`` as tuples, from :func:`add_target_args`' options."""
    return {"include": tuple(args.include or ()), "exclude": tuple(args.exclude or ())}


# ----------------------------------------------------------------------------- one vocabulary

def add_out_arg(p, what: str, aliases: tuple[str, ...] = (), dest: str = "out") -> None:
    """``--out FILE`` (required), the output file of every command that writes one; ``aliases``:
    its old spellings, hidden (``--onnx``)."""
    add_option(p, "--out", aliases=aliases, dest=dest, required=True, metavar="FILE",
               help=f"output file: {what}; a missing folder is created")


# where each method's fine-tuning LR comes from when --lr is not given (deepshrink/pipelines/defaults.py)
LR_DEFAULTS = {
    "prune": f"from the model's recorded training: its training LR ({defaults.PRUNE_LR:g} when none is recorded; "
             f"{defaults.TEXT_LR:g} with AdamW on text data)",
    "prune_channels": ("from the model's recorded training: a tenth of its training LR "
                       f"({defaults.CHANNEL_BASE_LR / defaults.CHANNEL_LR_DIVISOR:g} when none is recorded)"),
    "quantize": (f"{defaults.QAT_LR:g} for QAT, {defaults.KMEANS_LR:g} for k-means centroids (AdamW), whatever the "
                 "model's recorded training"),
    "distill": "the student's recipe (a zoo name) or the student file's recorded training",
    "train": "the model's recipe (deepshrink models --recipes)",
}


def add_lr_arg(p, method: str, what: str = "the fine-tuning") -> None:
    """``--lr``: in every command the learning rate actually used (never a base that is scaled);
    the help says where its default comes from (:data:`LR_DEFAULTS`)."""
    p.add_argument("--lr", action=POSITIVE, metavar="LR",
                   help=f"learning rate of {what}, used as given (default: {LR_DEFAULTS[method]})")


def add_seed_arg(p, default: int) -> None:
    p.add_argument("--seed", type=int, default=default, help="random seed (default: %(default)s)")


def add_progress_arg(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars (shown by default)")


DATA_HELP = "data spec (default: the one the model was trained on)"


def add_run_args(p, seed: int, *, data_help: str = DATA_HELP, kwargs: bool = True) -> None:
    """The options every command that produces a model ends with: ``--data``, ``--seed``,
    ``--no-progress``, ``--json`` and the model-file options (:func:`add_model_file_args`)."""
    p.add_argument("--data", help=data_help)
    add_seed_arg(p, seed)
    add_progress_arg(p)
    add_json_arg(p)
    add_model_file_args(p, kwargs=kwargs)


# ----------------------------------------------------------------------------- --json

def add_json_arg(p, what: str = "the output file and the key results") -> None:
    """``--json``: one JSON object on stdout (see :func:`json_output`)."""
    p.add_argument("--json", action="store_true",
                   help=f"print one JSON object ({what}) on stdout; progress messages go to stderr")


@contextlib.contextmanager
def json_output(enabled: bool) -> Iterator[None]:
    """With ``--json`` (``enabled``), whatever the library prints while it works goes to stderr, so
    that stdout holds the JSON object alone (:func:`print_json` after the block)."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _json_default(obj):
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # a numpy or torch scalar
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def print_json(obj) -> None:
    """``obj`` as one line of JSON on stdout (paths as strings)."""
    print(json.dumps(obj, default=_json_default), flush=True)


def output_facts(path: str | os.PathLike) -> dict:
    """``out`` and ``size_bytes`` (the written file's real size) for a command's JSON object."""
    return {"out": os.fspath(path), "size_bytes": os.path.getsize(path)}


# ----------------------------------------------------------------------------- code named on the command line

def import_from_cwd(spec: str, flag: str, error: type[DeepShrinkError] = ConfigError) -> None:
    """Import the module of the ``module:callable`` ``spec`` the user typed in ``flag``, with the
    current folder first on ``sys.path`` for this import only (as ``python -m`` would), so that
    ``--model mynet:build`` finds ``./mynet.py`` without ``PYTHONPATH=.``; once imported, the
    library's own lookup finds it in ``sys.modules``. A callable named only inside a file (its
    metadata) never gets this: the library imports it later, from ``sys.path`` as it is, and only
    with ``--trust-code``. Anything the import raises (not found, a SyntaxError, the module's own
    code failing) is one ``error`` naming the flag and the module (:mod:`deepshrink.usercode`)."""
    module = spec.partition(":")[0]
    if not module or module in sys.modules:
        return
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        import_user_module(module, error, f"{flag} {spec!r}",
                           hint=f"; looked in the current folder {cwd} and on the Python path")
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: ours (unless the import put one before it)


def import_typed_code(args, model_dest: str = "arch") -> None:
    """:func:`import_from_cwd` for a ``module:callable`` typed in ``--model`` (``args.arch``, or the
    ``model_dest`` attribute where the command stores it) or ``--data``; zoo names, ``hf:DIR`` and the
    data files (``npz:``, ``idx:``, ``text:``) import nothing."""
    arch = getattr(args, model_dest, None)
    if arch and ":" in arch and not is_hf_spec(arch):
        import_from_cwd(arch, "--model", ModelError)
    data = getattr(args, "data", None)
    if data and is_code_spec(data):
        import_from_cwd(data, "--data", DataError)
