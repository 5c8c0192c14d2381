"""``deepshrink <command>``: argparse subcommands, one clear error line on bad input.

One module per command, named after it; each exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (args -> exit code): it parses, calls one library function
(:mod:`deepshrink.pipelines`, :func:`deepshrink.compress.compress_file`) and prints. Errors from :mod:`deepshrink.errors` print as
``deepshrink: error: ...`` and exit 2, with no traceback; so do checked option values (raised
while parsing) and an OS error that slips past the commands' own checks (a folder removed
meanwhile, a full disk).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from ..errors import DeepShrinkError
from . import (compress, decompress, distill, evaluate, export, models, profile, prune, prune_channels, quantize,
               sensitivity, train)

__all__ = ["main", "build_parser", "version"]

# in the order ``deepshrink --help`` lists them
COMMAND_MODULES = (train, evaluate, models, profile, sensitivity, prune, decompress, distill, prune_channels,
                   compress, quantize, export)


def version() -> str:
    """The installed distribution's version, else the package's own ``__version__``."""
    try:
        return importlib.metadata.version("deepshrink")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        return int(args.func(args) or 0)
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file (a socket, a device): a bug to see in full
            raise
        print(f"deepshrink: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepshrink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
