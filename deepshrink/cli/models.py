"""``deepshrink models``: the model zoo with parameters and MACs, or (``--recipes``) the training
recipe of each zoo model: what ``deepshrink train --model NAME`` uses unless told otherwise."""

from __future__ import annotations

from dataclasses import asdict

from .. import models
from ..models.recipes import TARGETS, recipe
from ..pipelines.profile import profile_zoo
from .common import print_json

__all__ = ["register", "RECIPE_FIELDS", "recipes"]

# the TrainConfig fields a recipe sets, in the order they are printed
RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs",
                 "label_smoothing", "augment")


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo with parameters and MACs, or its training recipes")
    p.add_argument("--recipes", action="store_true",
                   help="list each zoo model's training recipe instead (epochs, optimizer, LR, augmentation ...: "
                        "what deepshrink train uses unless an option overrides it)")
    p.add_argument("--json", action="store_true", help="print one JSON value instead of a table")
    p.set_defaults(func=cmd_models)


def recipes() -> dict[str, dict]:
    """Each zoo model's training recipe (:data:`RECIPE_FIELDS`), and its target test accuracy on
    Fashion-MNIST where one is set."""
    out = {}
    for name in models.names():
        cfg = asdict(recipe(name))
        out[name] = {k: cfg[k] for k in RECIPE_FIELDS}
        if name in TARGETS:
            out[name]["target_accuracy"] = TARGETS[name]
    return out


def _print_recipes(table: dict[str, dict]) -> None:
    heads = {"batch_size": "batch", "weight_decay": "wd", "warmup_epochs": "warmup", "label_smoothing": "smoothing",
             "target_accuracy": "target"}
    cols = [*RECIPE_FIELDS, "target_accuracy"]

    def cell(v, col: str) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "on" if v else "off"
        if col == "target_accuracy":
            return f"{v:.1%}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    rows = [[name] + [cell(r.get(c), c) for c in cols] for name, r in table.items()]
    head = ["model"] + [heads.get(c, c) for c in cols]
    widths = [max(len(x) for x in col) + 2 for col in zip(head, *rows)]
    for row in [head, *rows]:
        print("".join(f"{x:<{w}}" for x, w in zip(row, widths)).rstrip())
    print("target: Fashion-MNIST test accuracy the recipe reaches; any field can be overridden, e.g. "
          "deepshrink train --model lenet5 --epochs 2")


def cmd_models(args) -> int:
    if args.recipes:
        table = recipes()
        if args.json:
            print_json(table)
        else:
            _print_recipes(table)
        return 0
    rows = profile_zoo()
    if args.json:
        print_json(rows)
        return 0
    w = max(len("model"), *(len(r["name"]) for r in rows)) + 2
    print(f"{'model':<{w}}{'params':>12}{'MACs (1x28x28)':>18}")
    for r in rows:
        print(f"{r['name']:<{w}}{r['params']:>12,}{r['macs']:>18,}")
    return 0
