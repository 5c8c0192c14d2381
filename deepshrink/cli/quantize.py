"""``deepshrink quantize``: linear PTQ/QAT or k-means weight sharing of a model file."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.defaults import Finetune
from ..pipelines.quantize import METHODS, QuantizeConfig, quantize_file
from ..quant import OBSERVERS
from .common import (NON_NEGATIVE, POSITIVE, add_augment_arg, add_model_file_args, augment_choice, check_output_path,
                     model_file_options)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("quantize", help="linear int2-8 quantization (PTQ, optional QAT) or k-means sharing")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--bits", type=int, default=QuantizeConfig.bits,
                   help="weight bits (k-means: conv layers; default %(default)s)")
    p.add_argument("--fc-bits", type=int, help="bits of the linear layers (default: --bits; k-means paper: 5)")
    p.add_argument("--act-bits", type=int, default=QuantizeConfig.act_bits,
                   help="activation bits (linear method; default %(default)s)")
    p.add_argument("--method", choices=METHODS, default=QuantizeConfig.method, help="default: %(default)s")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--observer", choices=list(OBSERVERS), default=QuantizeConfig.act_observer,
                   help="activation range observer (linear; default %(default)s)")
    p.add_argument("--weight-observer", choices=["minmax", "mse"], default=QuantizeConfig.weight_observer,
                   help="default: %(default)s")
    p.add_argument("--calib", type=int, default=QuantizeConfig.calib,
                   help="calibration images from the training split (default %(default)s)")
    p.add_argument("--qat-epochs", action=NON_NEGATIVE, default=QuantizeConfig.qat_epochs,
                   help="quantization-aware training epochs (linear; k-means: centroid fine-tuning)")
    p.add_argument("--lsq", action="store_true", help="QAT with learnt step sizes (LSQ)")
    p.add_argument("--lr", action=POSITIVE, help="QAT / fine-tuning learning rate")
    add_augment_arg(p)
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=QuantizeConfig.seed)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args) -> int:
    check_output_path(args.out)
    if args.calib < 1:
        raise ConfigError(f"--calib must be >= 1, got {args.calib}")
    cfg = QuantizeConfig(method=args.method, bits=args.bits, fc_bits=args.fc_bits, act_bits=args.act_bits,
                         per_channel=args.per_channel, act_observer=args.observer,
                         weight_observer=args.weight_observer, calib=args.calib, qat_epochs=args.qat_epochs,
                         lsq=args.lsq, seed=args.seed, progress=not args.no_progress)
    run = quantize_file(args.file, args.out, cfg, finetune=Finetune(lr=args.lr, augment=augment_choice(args)),
                        data=args.data, **model_file_options(args))
    before, after = run.accuracy_before, run.accuracy_after
    if run.fidelity is not None:   # unlabelled data (text): fidelity to the original, no accuracy
        mid, fid = run.fidelity["kmeans"], run.fidelity["after"]
        print(f"k-means {cfg.bits}-bit conv, {cfg.linear_bits}-bit fc")
        print(f"cosine to the original: mean {mid.cosine_mean:.4f}, min {mid.cosine_min:.4f} (test split, "
              "before centroid fine-tuning)")
        if cfg.qat_epochs:
            print(f"cosine to the original: mean {fid.cosine_mean:.4f}, min {fid.cosine_min:.4f} (test split)")
        print(f"-> {args.out}")
        return 0
    if cfg.method == "kmeans":
        print(f"k-means {cfg.bits}-bit conv, {cfg.linear_bits}-bit fc: test accuracy {before * 100:.2f}% -> "
              f"{run.accuracy_kmeans * 100:.2f}%"
              + (f" -> {after * 100:.2f}% after centroid fine-tuning" if cfg.qat_epochs else "")
              + f"  -> {args.out}")
        return 0
    print(f"linear {cfg.bits}-bit weights ({'per-channel' if cfg.per_channel else 'per-tensor'}), "
          f"{cfg.act_bits}-bit activations ({cfg.act_observer}, {run.calib} calibration images)"
          + (f", QAT {cfg.qat_epochs} epochs{' (LSQ)' if cfg.lsq else ''}" if cfg.qat_epochs else ""))
    print(f"test accuracy {before * 100:.2f}% -> {after * 100:.2f}%  ({(after - before) * 100:+.2f} pp)  -> {args.out}")
    return 0
