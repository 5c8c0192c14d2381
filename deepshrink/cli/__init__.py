"""``deepshrink <command>``: argparse subcommands, one clear error line on bad input.

One module per command, named after it; each exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (args -> exit code): it parses, calls one library function
(:mod:`deepshrink.pipelines`, :func:`deepshrink.compress.compress_file`) and prints. Errors from :mod:`deepshrink.errors` print as
``deepshrink: error: ...`` and exit 2, with no traceback; so do checked option values (raised
while parsing) and an OS error that slips past the commands' own checks (a folder removed
meanwhile, a full disk). A reader that stops early (``deepshrink profile --json | head -1``) ends
the command quietly, as SIGPIPE ends other tools: exit 141, no traceback; only when stdout itself is
the broken pipe (another pipe that breaks, a worker's, is an error reported in full).

Every command shares one flag vocabulary and shows each default in its ``--help``
(:mod:`deepshrink.cli.parser`); old spellings still parse, unlisted.
"""

from __future__ import annotations

import argparse
import os
import select
import stat
import sys

from ..errors import DeepShrinkError
from ..pipelines.export import version  # the one reader of the version, shared with the ONNX metadata
from . import (compare, compress, conv_table, decompress, distill, early_exit, evaluate, export, models, profile, prune,
               prune_channels, prune_heads, quantize, run, search, sensitivity, train)
from . import filter_analysis
from .parser import Parser

__all__ = ["main", "build_parser", "version"]

# in the order ``deepshrink --help`` lists them
COMMAND_MODULES = (train, evaluate, models, profile, compare, conv_table, sensitivity, prune, decompress, distill,
                   prune_channels, filter_analysis, prune_heads, compress, search, quantize, run, export, early_exit)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deepshrink",
        description="Make trained PyTorch models smaller and faster: measure, prune, quantize, encode.",
    )
    parser.add_argument("--version", action="version", version=f"deepshrink {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # checked numbers (cli.common.float_option) raise ConfigError here
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
        return code
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_broken():
            return _reader_gone()
        if exc.filename is None:  # not about a file (a socket, a device, a worker's pipe): a bug to see in full
            raise
        print(f"deepshrink: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepshrink: interrupted", file=sys.stderr)
        return 130


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _stdout_broken() -> bool:
    """Whether stdout itself is the broken pipe (its reader has gone), not some other pipe (a
    worker's): writing to it or flushing what it holds fails with EPIPE, or, with nothing left to
    flush, polling its descriptor reports the error condition a pipe without reader has."""
    out = sys.stdout
    try:
        out.write("")
        out.flush()
    except BrokenPipeError:
        return True
    except (AttributeError, ValueError, OSError):  # closed, or an object without these methods
        return False
    try:
        fd = out.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, ValueError, OSError):  # replaced by an object without a descriptor
        return False
    if not hasattr(select, "poll") or not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return False  # a file or a terminal has no reader to lose
    watch = select.poll()
    watch.register(fd, 0)  # errors and hang-ups are always reported
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in watch.poll(0))


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``| head``): point stdout at /dev/null so that the
    interpreter's final flush cannot raise again, and exit as SIGPIPE would, without a traceback."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by an object without a descriptor
        return SIGPIPE_EXIT
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return SIGPIPE_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
