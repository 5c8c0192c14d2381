"""``deepshrink models``: the model zoo with parameters and MACs."""

from __future__ import annotations

import json

from ..pipelines.profile import profile_zoo

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo with parameters and MACs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    rows = profile_zoo()
    if args.json:
        print(json.dumps(rows))
        return 0
    w = max(len("model"), *(len(r["name"]) for r in rows)) + 2
    print(f"{'model':<{w}}{'params':>12}{'MACs (1x28x28)':>18}")
    for r in rows:
        print(f"{r['name']:<{w}}{r['params']:>12,}{r['macs']:>18,}")
    return 0
