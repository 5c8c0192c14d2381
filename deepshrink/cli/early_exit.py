"""``deepshrink early-exit``: exit heads, a policy and thresholds chosen on the validation split,
stored in the model file; the test split reports the adaptive model against the original."""

from __future__ import annotations

from ..exits import ExitTraining
from ..exits.calibrate import LAMBDAS
from ..exits.policies import CLI_NAMES
from ..exits.train import MODES
from ..pipelines.early_exit import COSTS, EarlyExitConfig, early_exit_file
from .common import (FRACTION, NON_NEGATIVE, POSITIVE, add_augment_arg, add_json_arg, add_model_file_args,
                     add_out_arg, add_progress_arg, add_seed_arg, add_val_size_arg, check_output_dir, check_output_path,
                     check_val_size_arg, json_output, model_file_options, output_facts, print_json)
from .parser import add_option

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("early-exit", help="exits that stop early on easy inputs: heads, policy, thresholds",
                       description="Attach exit classifiers after chosen layers, train them (on the frozen model "
                                   "by default), choose an exit policy and its thresholds on the validation split "
                                   "(the lowest expected cost within --max-drop of the original's accuracy), and "
                                   "write one model file holding the heads and thresholds. The test split then "
                                   "reports the adaptive model against the original, once.")
    p.add_argument("file", help="trained model (.safetensors, .dsz, or .pt/.pth with --model)")
    add_out_arg(p, "the early-exit model (.safetensors: the model, its heads and thresholds)")
    p.add_argument("--at", dest="layers", nargs="+", metavar="LAYER",
                   help="module names to put exits after, in the order the model runs them, e.g. layer1 layer2 "
                        "(default: the end of each resolution stage but the last, within "
                        "80%% of the model's MACs)")
    p.add_argument("--head-depth", type=int, default=EarlyExitConfig.head_depth, metavar="N",
                   help="3x3 conv + BatchNorm + ReLU blocks per head, then pooling and a linear layer (default: "
                        "%(default)s)")
    p.add_argument("--head-width", type=int, metavar="C",
                   help="channels of each head's convs (default: the channels of the layer it reads)")
    p.add_argument("--mode", choices=MODES, default=ExitTraining.mode,
                   help="frozen: train the heads only, the model unchanged (its features cached); joint: train "
                        "heads and model together on the weighted sum of exit losses (default: %(default)s)")
    p.add_argument("--epochs", action=NON_NEGATIVE, default=ExitTraining.epochs, metavar="N",
                   help="training epochs (default: %(default)s)")
    p.add_argument("--lr", action=POSITIVE, metavar="LR",
                   help="learning rate, used as given (default: 0.05 for frozen heads, 0.005 in joint mode)")
    p.add_argument("--batch-size", type=int, default=ExitTraining.batch_size, metavar="N",
                   help="images per training step (default: %(default)s)")
    p.add_argument("--exit-weights", nargs="+", type=float, metavar="W",
                   help="loss weight of each exit (joint mode: then the model's own output) (default: 1 each)")
    add_option(p, "--kd-alpha", dest="kd_alpha", action=FRACTION, metavar="A", default=ExitTraining.kd_alpha,
               help="weight of distillation from the final exit in each head's loss, 0 for none "
                    "(default: %(default)s)")
    add_option(p, "--kd-temperature", dest="kd_temperature", action=POSITIVE, metavar="T",
               default=ExitTraining.kd_temperature,
               help="distillation temperature (default: %(default)s)")
    p.add_argument("--policy", choices=["auto", *CLI_NAMES], default="auto",
                   help="when a sample leaves: max-softmax (top probability), entropy, learned (a decision "
                        "function fitted on oracle labels, cost-weighted), or auto: the cheapest of the three on "
                        "the validation split (default: %(default)s)")
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=EarlyExitConfig.max_drop, metavar="PP",
                   help="accuracy the thresholds may lose against the original on the validation split, in "
                        "percentage points (default: %(default)s)")
    p.add_argument("--cost", choices=COSTS, default=EarlyExitConfig.cost,
                   help="what the threshold search minimises and the learned policy prices: macs (counted) or "
                        "latency (each stage timed at batch 1) (default: %(default)s)")
    p.add_argument("--lambdas", nargs="+", type=float, default=list(LAMBDAS), metavar="L",
                   help="learned policy: prices of one whole model's cost in errors to fit gates for; the "
                        "cheapest on validation is kept (default: "
                        f"{' '.join(f'{v:g}' for v in LAMBDAS)})")
    p.add_argument("--recalibrate", action="store_true",
                   help="keep the heads the file already has (after prune, quantize or compress changed the "
                        "model) and only choose the policy and thresholds again")
    add_augment_arg(p, "off; frozen mode caches the model's features, so it never augments")
    add_val_size_arg(p, "the policy and thresholds are chosen")
    p.add_argument("--plot", metavar="PNG", help="write each policy's accuracy vs average-MACs curve (default: none)")
    p.add_argument("--onnx-dir", dest="onnx_dir", metavar="DIR",
                   help="also write each stage as an ONNX file in DIR (stage0.onnx, ...; default: none)")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_seed_arg(p, ExitTraining.seed)
    add_progress_arg(p)
    add_json_arg(p)
    add_model_file_args(p)
    p.set_defaults(func=cmd_early_exit)


def cmd_early_exit(args) -> int:
    check_output_path(args.out)
    check_output_path(args.plot, "--plot")
    check_output_dir(args.onnx_dir, "--onnx-dir")
    check_val_size_arg(args)
    training = ExitTraining(mode=args.mode, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            exit_weights=args.exit_weights, kd_alpha=args.kd_alpha,
                            kd_temperature=args.kd_temperature, augment=args.augment == "on", seed=args.seed,
                            progress=not args.no_progress)
    cfg = EarlyExitConfig(layers=args.layers, head_depth=args.head_depth, head_width=args.head_width,
                          training=training, policy=args.policy, max_drop=args.max_drop, cost=args.cost,
                          lambdas=tuple(args.lambdas), val_size=args.val_size, recalibrate=args.recalibrate,
                          progress=not args.no_progress)
    opts = model_file_options(args)
    with json_output(args.json):
        run = early_exit_file(args.file, args.out, cfg, data=args.data, plot=args.plot, onnx_dir=args.onnx_dir,
                              **opts)
    t = run.test
    if args.json:
        print_json({"command": "early-exit", **output_facts(args.out), "file": args.file, **run.to_dict()})
        return 0
    c = run.choice
    print(f"policy {c.policy}: exits at {', '.join(run.plan.layers)}, thresholds "
          f"{', '.join('off' if v is None else f'{v:.4g}' for v in run.plan.thresholds)}")
    unit = "MACs" if run.plan.notes.get("cost") == "macs" else "ms"
    print(f"validation: accuracy {c.result.accuracy * 100:.2f}%, expected cost per sample "
          f"{c.result.cost:,.{0 if unit == 'MACs' else 3}f} {unit}")
    if not any(v is not None for v in run.plan.thresholds):
        print(f"no exit saves anything within {run.plan.notes.get('max_drop')} pp on the validation split: every "
              "sample runs the whole model (train the heads longer, or allow a larger --max-drop)")
    print(f"test: accuracy {t['original_accuracy'] * 100:.2f}% -> {t['accuracy'] * 100:.2f}% "
          f"({(t['accuracy'] - t['original_accuracy']) * 100:+.2f} pp), average MACs per sample "
          f"{t['original_macs']:,.0f} -> {t['expected_macs']:,.0f} ({t['macs_reduction']:.2f}x lower)")
    print("samples leaving at each exit: " + ", ".join(
        f"{name} {share * 100:.1f}%" for name, share in zip([*run.plan.layers, "output"], t["shares"])))
    if run.plot:
        print(f"curves -> {run.plot}")
    for path in run.onnx:
        print(f"stage -> {path}")
    print(f"-> {args.out}")
    return 0
