"""``distill``: train a student (a zoo name or a model file) against a teacher model file."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import data as data_mod
from .. import models
from ..distill import FEATURE_LOSSES, LOSSES, DistillConfig, distill, with_input_stats
from ..errors import ConfigError, DataError
from ..io import ModelInfo, build_arch, save_model
from ..models.recipes import arch_kwargs, recipe
from ..train import TrainConfig, evaluate, seed_everything
from .common import FINITE, NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_path, open_model, parse_kwargs

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("distill", help="train a student against a teacher's soft targets (and features)")
    p.add_argument("--teacher", required=True, help="teacher model file")
    p.add_argument("--student", required=True,
                   help=f"zoo name ({', '.join(models.names())}), trained from scratch, or a model file to go on from")
    p.add_argument("--kwargs", help="JSON arguments of a zoo student, e.g. '{\"conv1\": 6, \"conv2\": 16, \"fc1\": 120}'")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--loss", default="kl", help=f"loss on logits: {', '.join(LOSSES)} (default kl)")
    p.add_argument("--temperature", action=FINITE, default=4.0)
    p.add_argument("--alpha", action=FINITE, default=0.9, help="weight of the teacher term (1 - alpha on the labels)")
    p.add_argument("--features", nargs="*", default=[], metavar="S:T",
                   help="also match student layer S to teacher layer T (adapters learned where widths differ)")
    p.add_argument("--feature-loss", default="l2", help=f"{', '.join(FEATURE_LOSSES)} (default l2)")
    p.add_argument("--feature-weight", action=NON_NEGATIVE, default=1.0)
    p.add_argument("--epochs", type=int, help="default: the student's recipe (a file: 5)")
    p.add_argument("--lr", action=POSITIVE)
    p.add_argument("--weight-decay", action=NON_NEGATIVE)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup-epochs", action=NON_NEGATIVE, default=1.0,
                   help="linear LR warmup (default 1: at T >= 2 the distillation gradients, about "
                        "T (p_s - p_t), can kill every ReLU of a student without BatchNorm at its recipe's LR)")
    p.add_argument("--augment", choices=["on", "off"],
                   help="random shift/flip (default: the student's recipe); off lets the teacher's logits be cached")
    p.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")
    p.add_argument("--data", help="data spec (default: the one the teacher was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_distill)


def _config(args) -> DistillConfig:
    cfg = DistillConfig(loss=args.loss, temperature=args.temperature, alpha=args.alpha,
                        features=list(args.features), feature_loss=args.feature_loss,
                        feature_weight=args.feature_weight, cache=not args.no_cache)
    cfg.check()
    return cfg


def _student(args, ds_spec: str | None, teacher_info: ModelInfo):
    """(model, info, data set, recorded training settings, is_file) for --student."""
    if args.student in models.REGISTRY:
        extra = parse_kwargs(args.kwargs)
        spec = data_mod.spec_from_file(ds_spec, teacher_info.data, args.teacher, args.trust_code)
        ds = data_mod.load(spec)
        kwargs = arch_kwargs(args.student, ds, extra)
        seed_everything(args.seed)
        model = build_arch(ModelInfo(arch=args.student, kwargs=kwargs), trust_code=False, where="--student")
        info = ModelInfo(arch=args.student, kwargs=kwargs, input_shape=list(ds.input_shape), mean=ds.mean,
                         std=ds.std, data=spec)
        return model, info, ds, dict(asdict(recipe(args.student))), False
    if not Path(args.student).exists():
        raise ConfigError(f"--student {args.student!r}: neither a zoo model ({', '.join(models.names())}) "
                          "nor an existing file")
    if args.kwargs:
        raise ConfigError("--kwargs only applies to a zoo student, not to a model file")
    model, info = open_model(args, args.student)
    spec = data_mod.spec_from_file(ds_spec, info.data if info.data is not None else teacher_info.data,
                                   args.student if info.data is not None else args.teacher, args.trust_code)
    ds = data_mod.load(spec, mean=info.mean, std=info.std)
    return model, info, ds, {**info.train_config(), "epochs": 5}, True


def cmd_distill(args) -> int:
    check_output_path(args.out)
    cfg = _config(args)  # bad settings fail before any file is read
    teacher, tinfo = open_model(args, args.teacher)  # --model/--trust-code: for plain state dicts
    student, info, ds, trained, from_file = _student(args, args.data, tinfo)
    if list(ds.input_shape) != list(tinfo.input_shape) or list(ds.input_shape) != list(info.input_shape):
        raise DataError(f"images are {list(ds.input_shape)}; the teacher expects {list(tinfo.input_shape)}, "
                        f"the student {list(info.input_shape)}")
    teacher = with_input_stats(teacher, ds.mean, ds.std, tinfo.mean, tinfo.std)
    fields = set(TrainConfig.__dataclass_fields__) - {"checkpoint", "checkpoint_every", "progress", "verbose"}
    base = {k: v for k, v in trained.items() if k in fields}
    over = {"epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "warmup_epochs": args.warmup_epochs, "augment": None if args.augment is None else args.augment == "on"}
    tcfg = TrainConfig(**{**base, **{k: v for k, v in over.items() if v is not None}, "seed": args.seed,
                          "eval_every": 0, "progress": not args.no_progress})
    tcfg.check()
    t_acc = evaluate(teacher, ds.test)
    print(f"teacher {args.teacher}: {t_acc * 100:.2f}%; student {args.student}: "
          f"{sum(p.numel() for p in student.parameters()):,} params, {tcfg.epochs} epochs, loss {cfg.loss}"
          + (f" (T={cfg.temperature})" if cfg.loss == "kl" else "") + f", alpha {cfg.alpha}"
          + ("; teacher logits cached" if cfg.cache and not tcfg.augment and not cfg.features else
             "; teacher run on every batch"), flush=True)
    t0 = time.perf_counter()
    res = distill(teacher, student, ds, cfg, tcfg)
    student.to(memory_format=torch.contiguous_format)
    entry = {"op": "distill" if from_file else "train", "config": asdict(tcfg), "seconds": round(time.perf_counter() - t0, 2),
             "accuracy": res.accuracy, "threads": torch.get_num_threads(),
             "distill": {"teacher": str(args.teacher), "teacher_arch": tinfo.arch, "teacher_accuracy": t_acc,
                         **asdict(cfg), "cache_hits": res.cache_hits, "cache_misses": res.cache_misses,
                         "adapter_params": res.adapter_params}}
    info.accuracy = res.accuracy
    info.history.append(entry)
    save_model(student, args.out, info)
    print(f"student test accuracy {res.accuracy * 100:.2f}% (teacher {t_acc * 100:.2f}%)  -> {args.out}")
    return 0

