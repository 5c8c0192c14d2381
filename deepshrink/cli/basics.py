"""``train``, ``evaluate`` and ``models``."""

from __future__ import annotations

import json

import torch

from .. import data as data_mod
from .. import models
from ..errors import ModelError
from ..models.recipes import recipe, train_baseline
from ..profile import profile_model
from ..train import distributed_context, evaluate
from .common import (FRACTION_BELOW_ONE, NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_path,
                     load_data_for, open_model, parse_kwargs)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a zoo model and save it as .safetensors")
    p.add_argument("--model", required=True, help=f"zoo name ({', '.join(models.names())}) or module:callable")
    p.add_argument("--kwargs", help="JSON object of model arguments, e.g. '{\"dropout\": 0.1}'")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist | idx:DIR | npz:FILE | module:callable")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", action=POSITIVE)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--weight-decay", action=NON_NEGATIVE)
    p.add_argument("--label-smoothing", action=FRACTION_BELOW_ONE)
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE)
    p.add_argument("--no-augment", action="store_true", help="no random shift/flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="training-state file: resumed from if present, updated each epoch")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save every N optimizer steps")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a model file")
    p.add_argument("file")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_file_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the model zoo with parameters and MACs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def cmd_train(args) -> int:
    check_output_path(args.out)  # before the data is read, not after the training
    check_output_path(args.checkpoint, "--checkpoint")
    extra = parse_kwargs(args.kwargs)  # bad input fails before the data is read
    if args.model not in models.REGISTRY and ":" not in args.model:
        raise ModelError(f"unknown model {args.model!r}; the zoo has: {', '.join(models.names())}")
    ds = data_mod.load(args.data)
    cfg = recipe(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 optimizer=args.optimizer, weight_decay=args.weight_decay,
                 label_smoothing=args.label_smoothing, warmup_epochs=args.warmup_epochs,
                 augment=False if args.no_augment else None, seed=args.seed,
                 checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                 progress=not args.no_progress)
    rank, _ = distributed_context()
    if rank == 0:
        print(f"training {args.model} on {args.data}: {len(ds.train)} images, {cfg.epochs} epochs, "
              f"{cfg.optimizer} lr {cfg.lr}", flush=True)
    _, _, result = train_baseline(args.model, ds, args.data, args.out, cfg, extra)
    if rank == 0:
        print(f"test accuracy {result.accuracy * 100:.2f}%  ({result.seconds:.0f} s)  -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    model, info = open_model(args, args.file)
    ds = load_data_for(info, args.data, args, args.file)
    acc = evaluate(model, ds.test)
    spec = data_mod.spec_from_file(args.data, info.data, args.file, args.trust_code)
    if args.json:
        print(json.dumps({"file": args.file, "data": spec, "images": len(ds.test), "accuracy": acc}))
    else:
        print(f"{args.file}: test accuracy {acc * 100:.2f}% on {spec} ({len(ds.test)} images)")
    return 0


def cmd_models(args) -> int:
    rows = []
    for name in models.names():
        prof = profile_model(models.build(name), torch.zeros(1, 1, 28, 28))
        rows.append({"name": name, "params": prof.totals["params"], "macs": prof.totals["macs"]})
    if args.json:
        print(json.dumps(rows))
        return 0
    w = max(len("model"), *(len(r["name"]) for r in rows)) + 2
    print(f"{'model':<{w}}{'params':>12}{'MACs (1x28x28)':>18}")
    for r in rows:
        print(f"{r['name']:<{w}}{r['params']:>12,}{r['macs']:>18,}")
    return 0
