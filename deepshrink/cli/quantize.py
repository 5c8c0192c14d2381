"""``deepshrink quantize``: linear PTQ/QAT or k-means weight sharing of a model file."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..pipelines.defaults import Finetune
from ..pipelines.quantize import METHODS, QuantizeConfig, quantize_file
from ..quant import OBSERVERS
from .common import (NON_NEGATIVE, add_augment_arg, add_lr_arg, add_out_arg, add_run_args, augment_choice,
                     check_output_path, json_output, model_file_options, output_facts, print_json)
from .parser import add_option, add_switch_alias

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("quantize", help="linear int2-8 quantization (PTQ, optional QAT) or k-means sharing")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the quantized model (.safetensors)")
    add_option(p, "--bits", aliases=("--conv-bits",), dest="bits", type=int, default=QuantizeConfig.bits,
               help="weight bits (of every layer --fc-bits does not set; k-means: the conv layers; default "
                    "%(default)s)")
    p.add_argument("--fc-bits", type=int,
                   help="bits of the linear layers (default: --bits; k-means: the paper's 5, or --bits when lower)")
    p.add_argument("--act-bits", type=int, default=QuantizeConfig.act_bits,
                   help="activation bits (linear method; default %(default)s)")
    p.add_argument("--method", choices=METHODS, default=QuantizeConfig.method,
                   help="linear (PTQ, optional QAT) or kmeans (weight sharing) (default: %(default)s)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=QuantizeConfig.per_channel,
                   help="one weight scale per output channel; --no-per-channel: one per tensor (linear)")
    add_switch_alias(p, "--per-tensor", dest="per_channel", const=False, means=("--no-per-channel",))
    p.add_argument("--observer", choices=list(OBSERVERS), default=QuantizeConfig.act_observer,
                   help="activation range observer (linear; default %(default)s)")
    p.add_argument("--weight-observer", choices=["minmax", "mse"], default=QuantizeConfig.weight_observer,
                   help="weight range observer (linear; default: %(default)s)")
    p.add_argument("--smooth-alpha", type=_alpha, default=QuantizeConfig.smooth_alpha, metavar="A|off",
                   help="module swap (transformers, models fx cannot trace): SmoothQuant migration strength in "
                        "[0, 1] for the linear layers' inputs, from the calibration data; off: none (default "
                        "%(default)s)")
    p.add_argument("--calib", type=int, default=QuantizeConfig.calib, metavar="N",
                   help="calibration images from the training split (default %(default)s)")
    add_option(p, "--finetune-epochs", aliases=("--qat-epochs", "--centroid-epochs"), dest="finetune_epochs",
               action=NON_NEGATIVE, default=QuantizeConfig.qat_epochs, metavar="EPOCHS",
               help="fine-tuning epochs: quantization-aware training (linear) or centroid fine-tuning (k-means); "
                    "a fraction trains on that share of the training split (default: %(default)s, none)")
    p.add_argument("--lsq", action="store_true", help="QAT with learnt step sizes (LSQ)")
    add_lr_arg(p, "quantize", "the QAT or centroid fine-tuning")
    add_augment_arg(p)
    add_run_args(p, QuantizeConfig.seed)
    p.set_defaults(func=cmd_quantize)


def _alpha(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        a = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'off', got {text!r}") from None
    if not 0.0 <= a <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'off', got {text!r}")
    return a


def cmd_quantize(args) -> int:
    check_output_path(args.out)
    if args.calib < 1:
        raise ConfigError(f"--calib must be >= 1, got {args.calib}")
    cfg = QuantizeConfig(method=args.method, bits=args.bits, fc_bits=args.fc_bits, act_bits=args.act_bits,
                         per_channel=args.per_channel, act_observer=args.observer, smooth_alpha=args.smooth_alpha,
                         weight_observer=args.weight_observer, calib=args.calib, qat_epochs=args.finetune_epochs,
                         lsq=args.lsq, seed=args.seed, progress=not args.no_progress)
    opts = model_file_options(args)
    with json_output(args.json):
        run = quantize_file(args.file, args.out, cfg, finetune=Finetune(lr=args.lr, augment=augment_choice(args)),
                            data=args.data, **opts)
    if args.json:
        print_json(_json(args, cfg, run))
        return 0
    before, after = run.accuracy_before, run.accuracy_after
    if run.fidelity is not None and cfg.method == "linear":    # text: post-training, fidelity on test
        fid = run.fidelity["after"]
        print(f"linear {cfg.bits}-bit weights (per-channel), {cfg.act_bits}-bit dynamic activations, calibrated on "
              f"{run.calib} training rows"
              + (f", smoothed (alpha {cfg.smooth_alpha:g})" if cfg.smooth_alpha is not None else ""))
        print(f"cosine to the original: mean {fid.cosine_mean:.4f}, min {fid.cosine_min:.4f} (test split)")
        print(f"-> {args.out}")
        return 0
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
        print(f"k-means {cfg.bits}-bit conv, {cfg.linear_bits}-bit fc: test accuracy original {before * 100:.2f}%, "
              f"k-means shared {run.accuracy_kmeans * 100:.2f}%"
              + (f", after centroid fine-tuning {after * 100:.2f}%" if cfg.qat_epochs else "")
              + f" ({(after - before) * 100:+.2f} pp)  -> {args.out}")
        return 0
    print(f"linear {cfg.bits}-bit weights ({'per-channel' if cfg.per_channel else 'per-tensor'}), "
          + (f"{cfg.act_bits}-bit activations ({cfg.act_observer}, {run.calib} calibration images)" if run.calib else
             f"{cfg.act_bits}-bit dynamic activations in linear layers (module swap, no calibration)")
          + (f", QAT {cfg.qat_epochs} epochs{' (LSQ)' if cfg.lsq else ''}" if cfg.qat_epochs else ""))
    print(f"test accuracy original {before * 100:.2f}%, PTQ {run.accuracy_ptq * 100:.2f}%"
          + (f", after QAT {after * 100:.2f}%" if cfg.qat_epochs else "")
          + f"  ({(after - before) * 100:+.2f} pp)  -> {args.out}")
    return 0


def _json(args, cfg: QuantizeConfig, run) -> dict:
    """The ``--json`` object: the output file, the bits, and the accuracy at each stage (on
    unlabelled data the fidelity to the original instead)."""
    out = {"command": "quantize", **output_facts(args.out), "file": args.file, "method": cfg.method,
           "bits": cfg.bits, "fc_bits": cfg.linear_bits, "finetune_epochs": cfg.qat_epochs}
    if cfg.method == "linear":
        out.update(act_bits=cfg.act_bits, per_channel=cfg.per_channel, calib=run.calib,
                   smooth_alpha=cfg.smooth_alpha)
    if run.fidelity is not None:
        out["fidelity"] = {k: v.to_dict() for k, v in run.fidelity.items()}
        return out
    out["accuracy_before"] = run.accuracy_before
    for stage in ("accuracy_ptq", "accuracy_kmeans"):  # the accuracy right after quantizing, before fine-tuning
        if getattr(run, stage, None) is not None:
            out[stage] = getattr(run, stage)
    out["accuracy_after"] = run.accuracy_after
    return out
