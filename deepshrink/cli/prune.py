"""``deepshrink prune``: fine-grained pruning with fine-tuning; the masks kept in the file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..pipelines.defaults import Finetune
from ..pipelines.prune import AUTO_GRID, PLOT_FILES, auto_scan_dir, prune_file
from ..pipelines.sensitivity import ScanConfig
from ..prune import SCHEDULES, PruneConfig
from ..prune.finetune import PRUNE_RULES
from ..targets import candidate_weights
from ..prune.threshold import parse_layer_values
from .common import (FRACTION, FRACTION_BELOW_ONE, NON_NEGATIVE, POSITIVE, add_augment_arg, add_lr_arg, add_out_arg,
                     add_run_args, add_target_args, add_val_size_arg, augment_choice, check_output_dir,
                     check_output_path, check_scan_outputs, check_val_size_arg, json_output, model_file_options,
                     output_facts, print_json, target_globs)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("prune", help="fine-grained pruning with fine-tuning; masks kept in the file")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the pruned model (.safetensors, masks kept)")
    p.add_argument("--sparsity", action=FRACTION_BELOW_ONE,
                   help="target fraction of zeros, e.g. 0.92 (no default: this, --sparsity-map or --threshold-std is needed)")
    p.add_argument("--sparsity-map", metavar="LAYER=S,...",
                   help="per-layer sparsities by hand, e.g. fc1=0.95,fc2=0.9 (layers left out are not pruned; "
                        "default: none)")
    p.add_argument("--threshold-std", action=NON_NEGATIVE, metavar="S",
                   help="prune every weight with |w| < S x std of its layer (x --threshold-scale; default: none)")
    p.add_argument("--threshold-scale", metavar="LAYER=M,...",
                   help="per-layer multipliers of --threshold-std, e.g. conv1=0.5 (default: 1 for every layer)")
    p.add_argument("--rule", choices=PRUNE_RULES, default=PruneConfig.rule,
                   help="which weights go: the smallest by this rule; reconstruct: Wanda masks and a least-squares "
                        "refit of the kept Linear weights on --calibration training samples (default: magnitude, "
                        "reconstruct on text data)")
    p.add_argument("--scope", choices=["layer", "global"], default=PruneConfig.scope,
                   help="layer: the sparsity in every layer; global: one threshold across layers "
                        "(default: global, layer with --auto, --sparsity-map, --threshold-std or the "
                        "reconstruct rule)")
    p.add_argument("--schedule", choices=SCHEDULES, default=PruneConfig.schedule,
                   help="how the sparsity is reached over the fine-tuning (default: agp, oneshot with the "
                        "reconstruct rule)")
    p.add_argument("--calibration", type=int, default=PruneConfig.calibration, metavar="N",
                   help="training samples the reconstruct rule measures (default: %(default)s)")
    p.add_argument("--hidden-weight", action=NON_NEGATIVE, default=PruneConfig.hidden_weight, metavar="W",
                   help="text data: weight of the per-block hidden-state distance to the unpruned model in the "
                        "fine-tuning loss, 0 for the output alone (default: 1 for a model of repeated blocks, "
                        "such as a transformer, else 0)")
    p.add_argument("--optimizer", choices=("sgd", "adam"),
                   help="fine-tuning optimizer: SGD with Nesterov momentum, or AdamW (default: sgd; adam on "
                        "text data)")
    add_target_args(p)
    p.add_argument("--auto", action="store_true",
                   help="per-layer sparsities from a sensitivity scan (weighted by parameter count) on the "
                        "validation split (--val-size), whose images the fine-tuning then leaves out")
    p.add_argument("--finetune-epochs", type=int, default=PruneConfig.epochs, metavar="N",
                   help="fine-tuning epochs (default: %(default)s)")
    add_lr_arg(p, "prune")
    p.add_argument("--weight-decay", action=NON_NEGATIVE,
                   help="fine-tuning weight decay (default: the model's recorded training weight decay)")
    p.add_argument("--penalty", choices=["l1", "l2"], help="weight penalty during fine-tuning (default: none)")
    p.add_argument("--penalty-lambda", action=NON_NEGATIVE, default=PruneConfig.penalty_lambda,
                   help="strength of --penalty (default: %(default)s)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=None,
                   help="fine-tune against the unpruned model's soft targets (KD; default: on for labelled "
                        "data unless --penalty or --teacher is given; text always distils)")
    p.add_argument("--teacher", metavar="FILE",
                   help="fine-tune against this model's soft targets instead (e.g. a larger baseline; default: none)")
    p.add_argument("--kd-temperature", action=POSITIVE, default=PruneConfig.kd_temperature,
                   help="KD temperature (default %(default)s)")
    p.add_argument("--kd-alpha", action=FRACTION, default=PruneConfig.kd_alpha,
                   help="weight of the KD term (default %(default)s)")
    p.add_argument("--adjust-dropout", action="store_true",
                   help="Han's dropout adjustment D_r = D_o sqrt(C_r/C_o) for the pruned layers")
    p.add_argument("--remove-dead", action="store_true", help="drop hidden units left with no input/output")
    p.add_argument("--plots", metavar="DIR",
                   help="folder for weight histograms (and the scan's curves with --auto; default: no histograms, "
                        "--auto's scan in sensitivity/ beside --out)")
    add_augment_arg(p)
    add_val_size_arg(p, "--auto's scan is measured", aliases=("--eval-size",), removed=("--eval",))
    add_run_args(p, PruneConfig.seed)
    p.set_defaults(func=cmd_prune)


def _check_outputs(args) -> None:
    check_output_path(args.out)
    if args.plots is not None:
        check_output_dir(args.plots, "--plots")
        for name in PLOT_FILES:
            check_output_path(Path(args.plots) / name, "--plots")
    if args.auto:
        if args.plots is not None:  # as typed: Path("") would read as "."
            check_scan_outputs(args.plots, "--plots")
        else:
            check_scan_outputs(str(auto_scan_dir(args.out, None)), "--auto (its scan folder beside --out)")


def cmd_prune(args) -> int:
    _check_outputs(args)
    if args.auto and args.scope == "global":
        raise ConfigError("--auto chooses one sparsity per layer; it cannot be combined with --scope global")
    if args.distill and args.teacher:
        raise ConfigError("give --distill (the unpruned model as teacher) or --teacher FILE, not both")
    if args.val_size is not None and not args.auto:
        raise ConfigError("--val-size applies to --auto's scan; without --auto nothing is chosen on it")
    check_val_size_arg(args)
    given = [f for f, v in (("--sparsity", args.sparsity), ("--sparsity-map", args.sparsity_map),
                            ("--threshold-std", args.threshold_std)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give one of --sparsity, --sparsity-map or --threshold-std"
                          + (f" (got {', '.join(given)})" if given else ""))
    if args.threshold_scale and args.threshold_std is None:
        raise ConfigError("--threshold-scale multiplies --threshold-std: give it too")
    progress = not args.no_progress
    sparsity = args.sparsity if args.sparsity_map is None else parse_layer_values(args.sparsity_map, "--sparsity-map")
    cfg = PruneConfig(sparsity=sparsity if sparsity is not None else PruneConfig.sparsity,
                      threshold_std=args.threshold_std,
                      threshold_scale=parse_layer_values(args.threshold_scale, "--threshold-scale"), rule=args.rule, scope=args.scope, schedule=args.schedule,
                      epochs=args.finetune_epochs, penalty=args.penalty, penalty_lambda=args.penalty_lambda,
                      distill=args.distill, kd_temperature=args.kd_temperature, kd_alpha=args.kd_alpha,
                      adjust_dropout=args.adjust_dropout, remove_dead=args.remove_dead, seed=args.seed,
                      calibration=args.calibration, hidden_weight=args.hidden_weight, progress=progress,
                      **target_globs(args))
    auto = ScanConfig(sparsities=AUTO_GRID, rule=args.rule or ScanConfig.rule, val_size=args.val_size,
                      progress=progress) if args.auto else None
    opts = model_file_options(args)
    with json_output(args.json):
        run = prune_file(args.file, args.out, cfg, finetune=Finetune(lr=args.lr, weight_decay=args.weight_decay,
                                                                     augment=augment_choice(args),
                                                                     optimizer=args.optimizer),
                         auto=auto, teacher=args.teacher, plots=args.plots, data=args.data, **opts)
    result = run.result
    if args.json:
        print_json(_json(args, run))
        return 0
    print(f"{'layer':<24}{'sparsity':>10}")
    for name, s in run.layers.items():
        print(f"{name:<24}{s * 100:>9.2f}%")
    dense = [n for n in candidate_weights(run.model) if n not in run.layers]
    if dense:
        print("left dense (no pruning target; --include adds one): " + ", ".join(dense[:8])
              + (f", ... ({len(dense)} in all)" if len(dense) > 8 else ""))
    if run.fidelity is not None:   # unlabelled data: fidelity to the unpruned model, no accuracy
        pruned, after = run.fidelity["pruned"], run.fidelity["after"]
        print(f"total sparsity {result.sparsity * 100:.2f}% (over the pruned weights)")
        print(f"cosine to the original: mean {pruned.cosine_mean:.4f}, min {pruned.cosine_min:.4f} (test split, "
              "pruned, before fine-tuning)")
        print(f"cosine to the original: mean {after.cosine_mean:.4f}, min {after.cosine_min:.4f} (test split)"
              + (f"  top-1 agreement {after.agreement * 100:.2f}%" if after.agreement is not None else ""))
    else:
        print(f"total sparsity {result.sparsity * 100:.2f}% (over the pruned weights)  "
              f"test accuracy {result.accuracy_before * 100:.2f}% -> "
              f"{result.accuracy_after * 100:.2f}%  ({(result.accuracy_after - result.accuracy_before) * 100:+.2f} pp)")
    if result.dead_removed:
        print("dead units removed: " + ", ".join(f"{k} {v}" for k, v in result.dead_removed.items()))
    print(f"-> {args.out}" + (f" (plots in {run.plots})" if run.plots else ""))
    return 0


def _json(args, run) -> dict:
    """The ``--json`` object: the output file, the sparsity reached, and the accuracy before and after
    (on unlabelled data the fidelity to the unpruned model instead)."""
    result = run.result
    out = {"command": "prune", **output_facts(args.out), "file": args.file, "sparsity": result.sparsity,
           "layers": run.layers}
    if run.fidelity is not None:
        out["fidelity"] = {k: v.to_dict() for k, v in run.fidelity.items()}
    else:
        out["accuracy_before"], out["accuracy_after"] = result.accuracy_before, result.accuracy_after
    if result.dead_removed:
        out["dead_removed"] = result.dead_removed
    if run.plots:
        out["plots"] = str(run.plots)
    return out
