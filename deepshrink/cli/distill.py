"""``deepshrink distill``: train a student (a zoo name or a model file) against a teacher model file."""

from __future__ import annotations

from .. import models
from ..distill import FEATURE_LOSSES, LOSSES, DistillConfig
from ..pipelines.defaults import Finetune
from ..pipelines.distill import FILE_EPOCHS, StudentTraining, distill_file
from .common import (FRACTION, NON_NEGATIVE, POSITIVE, add_augment_arg, add_lr_arg, add_out_arg, add_run_args,
                     augment_choice, check_output_path, json_output, model_file_options, output_facts, parse_kwargs,
                     print_json)
from .parser import add_option

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("distill", help="train a student against a teacher's soft targets (and features)")
    p.add_argument("--teacher", required=True, metavar="FILE", help="teacher model file")
    p.add_argument("--student", required=True,
                   help=f"zoo name ({', '.join(models.names())}), trained from scratch, or a model file to go on from")
    p.add_argument("--kwargs", help="JSON arguments of a zoo student, e.g. '{\"conv1\": 6, \"conv2\": 16, \"fc1\": 120}' "
                                    "(default: none: the zoo model's own)")
    add_out_arg(p, "the trained student (.safetensors)")
    p.add_argument("--loss", default=DistillConfig.loss, help=f"loss on logits: {', '.join(LOSSES)} (default %(default)s)")
    add_option(p, "--kd-temperature", aliases=("--temperature",), dest="kd_temperature", action=POSITIVE,
               default=DistillConfig.temperature, help="KD temperature, for the kl loss (default: %(default)s)")
    add_option(p, "--kd-alpha", aliases=("--alpha",), dest="kd_alpha", action=FRACTION, default=DistillConfig.alpha,
               help="weight of the teacher term (1 - alpha on the labels; default %(default)s)")
    p.add_argument("--features", nargs="*", default=[], metavar="S:T",
                   help="also match student layer S to teacher layer T (adapters learned where widths differ)")
    p.add_argument("--feature-loss", default=DistillConfig.feature_loss,
                   help=f"{', '.join(FEATURE_LOSSES)} (default %(default)s)")
    p.add_argument("--feature-weight", action=NON_NEGATIVE, default=DistillConfig.feature_weight,
                   help="weight of the feature terms (default: %(default)s)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"training epochs (default: the student's recipe; a student file: {FILE_EPOCHS})")
    add_lr_arg(p, "distill", "the student's training")
    p.add_argument("--weight-decay", action=NON_NEGATIVE,
                   help="weight decay (default: the student's recipe or the student file's recorded training)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per step (default: the student's recipe or the student file's recorded training)")
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE, default=StudentTraining.warmup_epochs,
                   help="linear LR warmup (default %(default)s: at T >= 2 the distillation gradients, about "
                        "T (p_s - p_t), can kill every ReLU of a student without BatchNorm at its recipe's LR)")
    add_augment_arg(p, "the student's recipe; off lets the teacher's logits be cached")
    p.add_argument("--no-cache", action="store_true",
                   help="run the teacher on every batch (default: its logits cached when nothing is augmented)")
    add_run_args(p, StudentTraining.seed, data_help="data spec (default: the student file's, else the one the "
                                                     "teacher was trained on)", kwargs=False)
    p.set_defaults(func=cmd_distill)


def cmd_distill(args) -> int:
    check_output_path(args.out)
    cfg = DistillConfig(loss=args.loss, temperature=args.kd_temperature, alpha=args.kd_alpha,
                        features=list(args.features), feature_loss=args.feature_loss,
                        feature_weight=args.feature_weight, cache=not args.no_cache)
    training = StudentTraining(epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
                               seed=args.seed, progress=not args.no_progress)
    finetune = Finetune(lr=args.lr, weight_decay=args.weight_decay, augment=augment_choice(args))
    opts = model_file_options(args)
    with json_output(args.json):
        run = distill_file(args.teacher, args.student, args.out, cfg, training=training, finetune=finetune,
                           kwargs=parse_kwargs(args.kwargs), data=args.data, **opts)
    if args.json:
        print_json({"command": "distill", **output_facts(args.out), "teacher": args.teacher, "student": args.student,
                    "accuracy": run.result.accuracy, "teacher_accuracy": run.teacher_accuracy,
                    "epochs": run.train.epochs, "lr": run.train.lr})
        return 0
    print(f"student test accuracy {run.result.accuracy * 100:.2f}% (teacher {run.teacher_accuracy * 100:.2f}%)  "
          f"-> {args.out}")
    return 0
