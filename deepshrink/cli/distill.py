"""``deepshrink distill``: train a student (a zoo name or a model file) against a teacher model file."""

from __future__ import annotations

from .. import models
from ..distill import FEATURE_LOSSES, LOSSES, DistillConfig
from ..pipelines.defaults import Finetune
from ..pipelines.distill import FILE_EPOCHS, StudentTraining, distill_file
from .common import (FINITE, NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_path, model_file_options,
                     parse_kwargs)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("distill", help="train a student against a teacher's soft targets (and features)")
    p.add_argument("--teacher", required=True, help="teacher model file")
    p.add_argument("--student", required=True,
                   help=f"zoo name ({', '.join(models.names())}), trained from scratch, or a model file to go on from")
    p.add_argument("--kwargs", help="JSON arguments of a zoo student, e.g. '{\"conv1\": 6, \"conv2\": 16, \"fc1\": 120}'")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--loss", default=DistillConfig.loss, help=f"loss on logits: {', '.join(LOSSES)} (default %(default)s)")
    p.add_argument("--temperature", action=FINITE, default=DistillConfig.temperature, help="default: %(default)s")
    p.add_argument("--alpha", action=FINITE, default=DistillConfig.alpha,
                   help="weight of the teacher term (1 - alpha on the labels; default %(default)s)")
    p.add_argument("--features", nargs="*", default=[], metavar="S:T",
                   help="also match student layer S to teacher layer T (adapters learned where widths differ)")
    p.add_argument("--feature-loss", default=DistillConfig.feature_loss,
                   help=f"{', '.join(FEATURE_LOSSES)} (default %(default)s)")
    p.add_argument("--feature-weight", action=NON_NEGATIVE, default=DistillConfig.feature_weight,
                   help="default: %(default)s")
    p.add_argument("--epochs", type=int, help=f"default: the student's recipe (a file: {FILE_EPOCHS})")
    p.add_argument("--lr", action=POSITIVE)
    p.add_argument("--weight-decay", action=NON_NEGATIVE)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE, default=StudentTraining.warmup_epochs,
                   help="linear LR warmup (default %(default)s: at T >= 2 the distillation gradients, about "
                        "T (p_s - p_t), can kill every ReLU of a student without BatchNorm at its recipe's LR)")
    p.add_argument("--augment", choices=["on", "off"],
                   help="random shift/flip (default: the student's recipe); off lets the teacher's logits be cached")
    p.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")
    p.add_argument("--data", help="data spec (default: the one the teacher was trained on)")
    p.add_argument("--seed", type=int, default=StudentTraining.seed)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p, kwargs=False)
    p.set_defaults(func=cmd_distill)


def cmd_distill(args) -> int:
    check_output_path(args.out)
    cfg = DistillConfig(loss=args.loss, temperature=args.temperature, alpha=args.alpha,
                        features=list(args.features), feature_loss=args.feature_loss,
                        feature_weight=args.feature_weight, cache=not args.no_cache)
    training = StudentTraining(epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
                               seed=args.seed, progress=not args.no_progress)
    finetune = Finetune(lr=args.lr, weight_decay=args.weight_decay,
                        augment=None if args.augment is None else args.augment == "on")
    run = distill_file(args.teacher, args.student, args.out, cfg, training=training, finetune=finetune,
                       kwargs=parse_kwargs(args.kwargs), data=args.data, **model_file_options(args))
    print(f"student test accuracy {run.result.accuracy * 100:.2f}% (teacher {run.teacher_accuracy * 100:.2f}%)  "
          f"-> {args.out}")
    return 0
