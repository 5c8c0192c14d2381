"""``deepshrink train``: a zoo model trained with its baseline recipe, saved as .safetensors."""

from __future__ import annotations

import argparse

from .. import models
from ..models.recipes import recipe
from ..pipelines.train import train_file
from .common import FRACTION_BELOW_ONE, NON_NEGATIVE, POSITIVE, add_augment_arg, check_output_path, parse_kwargs

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a zoo model and save it as .safetensors")
    p.add_argument("--model", required=True, help=f"zoo name ({', '.join(models.names())}) or module:callable")
    p.add_argument("--kwargs", help="JSON object of model arguments, e.g. '{\"dropout\": 0.1}'")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist | idx:DIR | npz:FILE | module:callable")
    p.add_argument("--out", required=True, help="output .safetensors file")
    # no defaults below: each one is the model's recipe (deepshrink/models/recipes.py) unless given
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", action=POSITIVE)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--weight-decay", action=NON_NEGATIVE)
    p.add_argument("--label-smoothing", action=FRACTION_BELOW_ONE)
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE)
    add_augment_arg(p, "the model's recipe")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="off", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="training-state file: resumed from if present, updated each epoch")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save every N optimizer steps")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    check_output_path(args.out)  # before the data is read, not after the training
    check_output_path(args.checkpoint, "--checkpoint")
    extra = parse_kwargs(args.kwargs)  # bad input fails before the data is read
    cfg = recipe(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 optimizer=args.optimizer, weight_decay=args.weight_decay,
                 label_smoothing=args.label_smoothing, warmup_epochs=args.warmup_epochs,
                 augment=None if args.augment is None else args.augment == "on", seed=args.seed,
                 checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                 progress=not args.no_progress)
    run = train_file(args.model, args.out, cfg, data=args.data, kwargs=extra)
    if run.rank == 0:
        print(f"test accuracy {run.result.accuracy * 100:.2f}%  ({run.result.seconds:.0f} s)  -> {args.out}")
    return 0
