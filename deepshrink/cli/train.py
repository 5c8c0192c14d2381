"""``deepshrink train``: a zoo model trained with its baseline recipe, saved as .safetensors."""

from __future__ import annotations

from .. import models
from ..data import MAX_VAL_IMAGES, VAL_FRACTION
from ..models.recipes import recipe
from ..pipelines.train import check_train_val_size, train_file
from ..train import TrainConfig
from .common import (FRACTION_BELOW_ONE, NON_NEGATIVE, add_augment_arg, add_json_arg, add_lr_arg, add_out_arg,
                     add_progress_arg, add_seed_arg, check_output_path, import_typed_code, json_output, output_facts,
                     parse_kwargs, print_json)
from .parser import add_option, add_switch_alias

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a zoo model and save it as .safetensors")
    p.add_argument("--model", required=True,
                   help=f"zoo name ({', '.join(models.names())}) or module:callable (may live in the current folder)")
    p.add_argument("--kwargs", help="JSON object of model arguments, e.g. '{\"dropout\": 0.1}' (default: none)")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist | idx:DIR | npz:FILE | module:callable (default: %(default)s)")
    add_out_arg(p, "the trained model (.safetensors)")
    # no numbers below: each default is the model's recipe (deepshrink/models/recipes.py) unless given
    recipe_default = "default: the model's recipe, listed by deepshrink models --recipes"
    p.add_argument("--epochs", type=int, metavar="N", help=f"training epochs ({recipe_default})")
    add_lr_arg(p, "train", "the training (peak, after warmup)")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"images per step ({recipe_default})")
    p.add_argument("--optimizer", choices=["sgd", "adam"],
                   help=f"sgd (Nesterov momentum) or adam (AdamW) ({recipe_default})")
    p.add_argument("--weight-decay", action=NON_NEGATIVE, help=f"weight decay ({recipe_default})")
    p.add_argument("--label-smoothing", action=FRACTION_BELOW_ONE, help=f"label smoothing ({recipe_default})")
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE, help=f"linear LR warmup, in epochs ({recipe_default})")
    add_augment_arg(p, "the model's recipe")
    add_switch_alias(p, "--no-augment", dest="augment", const="off", means=("--augment", "off"))
    add_seed_arg(p, TrainConfig.seed)
    add_option(p, "--val-size", dest="val_size", type=int, metavar="N",
               help="training images held out of the training (seeded): the validation split on which compress, "
                    "prune --auto and sensitivity later make their choices, recorded in the file; 0 trains on "
                    f"every training image (default: {VAL_FRACTION:.0%}% of the training split, at most "
                    f"{MAX_VAL_IMAGES:,}, the split those commands carve)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="training-state file: resumed from if present, updated each epoch (default: none)")
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, metavar="N",
                   help="also save every N optimizer steps (default: %(default)s, only at the end of each epoch)")
    add_progress_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    check_output_path(args.out)  # before the data is read, not after the training
    check_output_path(args.checkpoint, "--checkpoint")
    check_train_val_size(args.val_size, "--val-size")  # 0 allowed here: no hold-out
    extra = parse_kwargs(args.kwargs)  # bad input fails before the data is read
    import_typed_code(args, model_dest="model")  # the user's own module:callable, maybe in the current folder
    cfg = recipe(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 optimizer=args.optimizer, weight_decay=args.weight_decay,
                 label_smoothing=args.label_smoothing, warmup_epochs=args.warmup_epochs,
                 augment=None if args.augment is None else args.augment == "on", seed=args.seed,
                 checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                 progress=not args.no_progress)
    with json_output(args.json):
        run = train_file(args.model, args.out, cfg, data=args.data, kwargs=extra, val_size=args.val_size)
    if run.rank != 0:
        return 0
    if args.json:
        print_json({"command": "train", **output_facts(args.out), "model": args.model, "data": args.data,
                    "accuracy": run.result.accuracy, "val_accuracy": run.val_accuracy, "held_out": run.held_out,
                    "epochs": cfg.epochs, "seconds": run.result.seconds})
        return 0
    print(_held_out_line(run.held_out, run.val_accuracy))
    print(f"test accuracy {run.result.accuracy * 100:.2f}%  ({run.result.seconds:.0f} s)  -> {args.out}")
    return 0


def _held_out_line(held: dict, val_accuracy: float | None) -> str:
    """Which training images the model saw, and what it scores on the ones it did not."""
    k, n = held["val_size"], held["of_train"]
    if k == 0:
        return (f"trained on all {n:,} training images (--val-size 0: none held out, so compress, prune --auto and "
                "sensitivity will choose on images it was trained on)")
    acc = "" if val_accuracy is None else f"; validation accuracy {val_accuracy * 100:.2f}%"
    return f"trained on {n - k:,} images; {k:,} held out for later choices (the validation split{acc})"
