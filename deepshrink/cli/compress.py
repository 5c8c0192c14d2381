"""``deepshrink compress``: the Deep Compression pipeline from a model file to a .dsz file."""

from __future__ import annotations

from pathlib import Path

from ..compress import CompressConfig, compress_file
from ..errors import ConfigError
from ..pipelines.compress_report import report_paths
from .common import (FINITE, FRACTION, NON_NEGATIVE, POSITIVE, add_augment_arg, add_model_file_args, add_target_args,
                     add_val_size_arg, augment_choice, check_output_path, check_val_size_arg, model_file_options,
                     target_globs)

__all__ = ["register", "cmd_compress"]


def register(sub) -> None:
    p = sub.add_parser("compress", help="prune + k-means share + encode a model into a .dsz file (Deep Compression)",
                       description="Sensitivity-guided AGP pruning, k-means weight sharing with centroid "
                                   "fine-tuning, then sparse relative-index + entropy coding into a .dsz file. "
                                   "Prints the per-layer table and writes a markdown report with plots beside it. "
                                   "The scan, the accuracy budget and the retries are judged on a validation split "
                                   "carved from the training data and held out of the fine-tuning; the test split "
                                   "only gives the reported accuracy.")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    p.add_argument("--out", required=True, help="output .dsz file")
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=CompressConfig.max_drop, metavar="PP",
                   help="largest validation-accuracy drop allowed, in percentage points (default %(default)s)")
    p.add_argument("--data", help="data spec (default: the one recorded in the model file)")
    p.add_argument("--sparsity", action=FINITE, default=CompressConfig.sparsity,
                   help="first total sparsity target (default %(default)s)")
    p.add_argument("--allocation", choices=("sensitivity", "global"), default=CompressConfig.allocation,
                   help="per-layer sparsities from a sensitivity scan, or one global threshold (default %(default)s)")
    p.add_argument("--prune-epochs", type=int, default=CompressConfig.prune_epochs,
                   help="AGP fine-tuning epochs (default %(default)s)")
    p.add_argument("--conv-bits", type=int, default=CompressConfig.conv_bits,
                   help="k-means bits for conv layers (default %(default)s)")
    p.add_argument("--fc-bits", type=int, default=CompressConfig.fc_bits,
                   help="k-means bits for linear layers (default %(default)s)")
    p.add_argument("--centroid-epochs", type=int, default=CompressConfig.centroid_epochs,
                   help="centroid fine-tuning epochs (default %(default)s)")
    p.add_argument("--attempts", type=int, default=CompressConfig.attempts,
                   help="tries, each 2 points of sparsity lower, while over the accuracy budget (default %(default)s)")
    p.add_argument("--distill", action="store_true", help="the dense model as teacher while fine-tuning")
    p.add_argument("--teacher", metavar="FILE", help="another model as teacher while fine-tuning (e.g. a larger baseline)")
    p.add_argument("--kd-temperature", action=POSITIVE, default=CompressConfig.kd_temperature,
                   help="KD temperature (default %(default)s)")
    p.add_argument("--kd-alpha", action=FRACTION, default=CompressConfig.kd_alpha,
                   help="weight of the KD term (default %(default)s)")
    p.add_argument("--lr", action=FINITE, help="pruning fine-tuning LR (default: the model's training LR)")
    add_target_args(p)
    add_augment_arg(p)
    add_val_size_arg(p, "the scan, the accuracy budget and the retries are judged", aliases=("--scan-size",))
    p.add_argument("--seed", type=int, default=CompressConfig.seed)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    check_output_path(args.out)
    for path in report_paths(Path(args.out)).values():  # the report and its plots lie beside it
        check_output_path(path, "--out (its report)")
    if args.distill and args.teacher:
        raise ConfigError("give --distill (the dense model as teacher) or --teacher FILE, not both")
    check_val_size_arg(args)
    cfg = CompressConfig(max_drop=args.max_drop, sparsity=args.sparsity, allocation=args.allocation,
                         val_size=args.val_size, augment=augment_choice(args),
                         prune_epochs=args.prune_epochs, conv_bits=args.conv_bits,
                         fc_bits=args.fc_bits, centroid_epochs=args.centroid_epochs, distill=args.distill,
                         kd_temperature=args.kd_temperature, kd_alpha=args.kd_alpha, prune_lr=args.lr,
                         attempts=args.attempts, seed=args.seed, progress=not args.no_progress,
                         **target_globs(args))
    opts = model_file_options(args)
    result, report, md = compress_file(args.file, args.out, cfg, args.data, opts["arch"], opts["trust_code"],
                                       teacher=args.teacher, model_kwargs=opts.get("model_kwargs"))
    print()
    print(report.to_markdown())
    print()
    before, after = result.accuracy_before, result.accuracy_after
    val_before, val_after = result.val_accuracy_before, result.val_accuracy_after
    print(f"validation accuracy {val_before * 100:.2f}% -> {val_after * 100:.2f}% "
          f"({(val_after - val_before) * 100:+.2f} pp; budget -{cfg.max_drop} pp: "
          f"{'within' if result.within_budget else 'OVER BUDGET'}) on {result.val_on}")
    print(f"test accuracy {before * 100:.2f}% -> {after * 100:.2f}% ({(after - before) * 100:+.2f} pp) "
          f"on {result.test_on}, reported only")
    print(report.summary())
    print(f"-> {args.out} (report: {md})")
    return 0 if result.within_budget else 1
