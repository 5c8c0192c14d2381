"""``deepshrink decompress``: a .dsz file back to a normal .safetensors model file (bit-exact weights)."""

from __future__ import annotations

from ..pipelines.decompress import decompress_file
from .common import add_out_arg, check_output_path, print_json

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("decompress", help="decode a .dsz file into a .safetensors model file")
    p.add_argument("file", help="the .dsz file")
    add_out_arg(p, "the decoded model (.safetensors)")
    p.add_argument("--report", action="store_true", help="also print the per-layer compression table")
    p.add_argument("--json", action="store_true", help="print one JSON object (the compression table) instead of text")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the file's module:callable architecture to be imported")
    p.set_defaults(func=cmd_decompress)


def cmd_decompress(args) -> int:
    check_output_path(args.out)
    report = decompress_file(args.file, args.out, trust_code=args.trust_code).report
    if args.json:
        print_json({"file": args.file, "out": args.out, **report.to_dict()})
        return 0
    print(f"{args.file} -> {args.out}: {report.summary()}")
    if args.report:
        print(report.to_markdown())
    return 0
