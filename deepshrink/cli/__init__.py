"""``deepshrink <command>``: argparse subcommands, one clear error line on bad input.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (args -> exit code). Errors from :mod:`deepshrink.errors` print as
``deepshrink: error: ...`` and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import DeepShrinkError
from . import basics, channel_cmd, codec_cmd, compress_cmd, distill_cmd, profile_cmd, prune_cmd, quant_cmd

__all__ = ["main", "build_parser"]

COMMAND_MODULES = (basics, profile_cmd, prune_cmd, codec_cmd, distill_cmd, channel_cmd, compress_cmd, quant_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepshrink",
        description="Make trained PyTorch models smaller and faster: measure, prune, quantize, encode.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepshrink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
