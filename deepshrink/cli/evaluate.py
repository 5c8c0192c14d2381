"""``deepshrink evaluate``: the test accuracy of a model file."""

from __future__ import annotations

import json

from ..pipelines.evaluate import evaluate_file
from .common import add_model_file_args, model_file_options

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy of a model file")
    p.add_argument("file")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_file_args(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    run = evaluate_file(args.file, data=args.data, **model_file_options(args))
    if args.json:
        print(json.dumps({"file": args.file, "data": run.data, "images": run.images, "accuracy": run.accuracy}))
    else:
        print(f"{args.file}: test accuracy {run.accuracy * 100:.2f}% on {run.data} ({run.images} images)")
    return 0
