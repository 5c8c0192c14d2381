"""``deepshrink prune-channels``: structured pruning with fine-tuning; the channel plan kept in the file."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.defaults import Finetune
from ..pipelines.prune_channels import LatencyChoice, prune_channels_file
from ..prune import CRITERIA, SCOPES, ChannelConfig
from ..prune.latency_table import RUNTIMES
from ..prune.netadapt import NetAdaptConfig
from .common import (FINITE, NON_NEGATIVE, add_augment_arg, add_lr_arg, add_out_arg, add_run_args, add_val_size_arg,
                     augment_choice, check_output_path, check_val_size_arg, json_output, model_file_options,
                     output_facts, print_json)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("prune-channels", help="remove whole channels/filters (a smaller dense model), fine-tune")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the smaller model (.safetensors, the channel plan kept)")
    how = p.add_mutually_exclusive_group()       # one of these or --latency-target (checked: one error line)
    how.add_argument("--ratio", action=FINITE,
                     help="fraction of each layer's channels removed, e.g. 0.3 (no default: give one of --ratio, "
                          "--macs-target and --latency-target)")
    how.add_argument("--macs-target", action=FINITE,
                     help="fraction of the MACs kept, e.g. 0.5 halves them (no default: one of the three)")
    p.add_argument("--latency-target", action=FINITE, metavar="F",
                   help="fraction of the measured latency kept, e.g. 0.6: NetAdapt's loop cuts one layer group "
                        "at a time, choosing channel counts from a per-layer latency table measured on this "
                        "machine (cached under $DEEPSHRINK_CACHE or ~/.cache/deepshrink), each proposal scored "
                        "on validation images (no default: one of the three)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="with --latency-target: the batch size whose latency is measured (default: 1)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="with --latency-target: the runtime measured; torch (eager, on torch's thread setting) "
                        "is the one runtime measured so far (default: torch)")
    p.add_argument("--short-term-batches", type=int, metavar="N",
                   help="with --latency-target: NetAdapt's short-term fine-tuning, N training batches after each "
                        "iteration, so the next proposals are scored on a model that has recovered (default: "
                        f"{LatencyChoice.tune_batches}; 0: none)")
    add_val_size_arg(p, "--latency-target's proposals are scored")
    p.add_argument("--criterion", choices=list(CRITERIA), default=ChannelConfig.criterion,
                   help="l1/l2 filter norm, fro (input-channel norm), fpgm, bn (BatchNorm scale), random "
                        "(default: %(default)s)")
    p.add_argument("--scope", choices=SCOPES, default=ChannelConfig.scope,
                   help="layer: one ratio for every layer; global: one ranking across layers (default: %(default)s)")
    p.add_argument("--round-to", type=int, default=ChannelConfig.round_to,
                   help="keep channel counts a multiple of this: 16 fills the AVX-512 lanes of fp32 CPU kernels "
                        "(other counts measured here fall off oneDNN's and ONNX Runtime's blocked kernels; "
                        "default: %(default)s)")
    p.add_argument("--rounds", type=int, default=ChannelConfig.rounds,
                   help="prune in this many steps, fine-tuning between (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=ChannelConfig.epochs, metavar="N",
                   help="total fine-tuning epochs, spread over the rounds (fewer than --rounds: a share of the "
                        "training images after each cut; default: %(default)s)")
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=ChannelConfig.max_drop, metavar="PP",
                   help="warn when the test accuracy falls by more than this, in percentage points "
                        "(default %(default)s)")
    add_lr_arg(p, "prune_channels")
    p.add_argument("--weight-decay", action=NON_NEGATIVE,
                   help="fine-tuning weight decay (default: the model's recorded training weight decay)")
    add_augment_arg(p)
    add_run_args(p, ChannelConfig.seed)
    p.set_defaults(func=cmd_prune_channels)


def _latency_choice(args) -> LatencyChoice | None:
    """``--latency-target`` and its options, or None; one of --ratio/--macs-target/--latency-target."""
    given = [o for o, v in (("--ratio", args.ratio), ("--macs-target", args.macs_target),
                            ("--latency-target", args.latency_target)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give one of --ratio, --macs-target and --latency-target"
                          + (f", not {' and '.join(given)}" if given else ""))
    if args.latency_target is None:
        extra = [o for o, v in (("--batch-size", args.batch_size), ("--runtime", args.runtime),
                                ("--val-size", args.val_size), ("--short-term-batches", args.short_term_batches))
                 if v is not None]
        if extra:
            raise ConfigError(f"{' and '.join(extra)}: only with --latency-target")
        return None
    check_val_size_arg(args)
    return LatencyChoice(NetAdaptConfig(args.latency_target, runtime=args.runtime or "torch"),
                         batch_size=1 if args.batch_size is None else args.batch_size, val_size=args.val_size,
                         tune_batches=LatencyChoice.tune_batches if args.short_term_batches is None
                         else args.short_term_batches)


def cmd_prune_channels(args) -> int:
    check_output_path(args.out)
    if args.round_to < 1:
        raise ConfigError(f"--round-to must be >= 1, got {args.round_to}")
    latency = _latency_choice(args)
    cfg = ChannelConfig(ratio=args.ratio, macs_target=args.macs_target, criterion=args.criterion,
                        scope=args.scope, rounds=args.rounds, epochs=args.finetune_epochs, round_to=args.round_to,
                        seed=args.seed, max_drop=args.max_drop,
                        progress=not args.no_progress)
    finetune = Finetune(lr=args.lr, weight_decay=args.weight_decay, augment=augment_choice(args))
    opts = model_file_options(args)
    with json_output(args.json):
        run = prune_channels_file(args.file, args.out, cfg, finetune=finetune, data=args.data, latency=latency,
                                  **opts)
    result = run.result
    if args.json:
        print_json({"command": "prune-channels", **output_facts(args.out), "file": args.file,
                    **{k: v for k, v in result.to_dict().items() if k not in ("prune_seconds", "fits")}})
        return 0
    for rec in result.rounds:
        print(f"round {rec['round']}: MACs {rec['macs']:,}  test accuracy after the cut "
              f"{rec['accuracy_pruned'] * 100:.2f}%"
              + (f", after fine-tuning {rec['accuracy_tuned'] * 100:.2f}%" if "accuracy_tuned" in rec else ""))
    lat = getattr(result, "latency", None)
    if lat:
        print(f"latency (batch {lat['batch_size']}, {lat['runtime']}, {lat['threads']} thread(s)): measured "
              f"{lat['latency_before_ms']:.3f} -> {lat['latency_after_ms']:.3f} ms ({lat['latency_ratio']:.3f}x), "
              f"predicted {lat['predicted_after_ms']:.3f} ms ({lat['predicted_ratio']:.3f}x); target "
              f"{lat['latency_target']:g}x{'' if lat['reached'] else ' not reached'}; "
              f"{len(lat['iterations'])} NetAdapt iterations scored on {lat['score_images']:,} validation images")
    print(f"MACs {result.macs_before:,} -> {result.macs_after:,} ({result.macs_ratio:.3f}x)  "
          f"params {result.params_before:,} -> {result.params_after:,}")
    print(f"test accuracy {result.accuracy_before * 100:.2f}% -> {result.accuracy_after * 100:.2f}%  "
          f"({(result.accuracy_after - result.accuracy_before) * 100:+.2f} pp)")
    print(f"-> {args.out}")
    return 0
