"""``prune-channels``: structured pruning with fine-tuning; the channel plan kept in the file."""

from __future__ import annotations

from dataclasses import asdict

import torch

from ..errors import ConfigError
from ..io import save_model
from ..prune import CRITERIA, SCOPES, ChannelConfig, ChannelPlan, prune_channels_and_finetune
from ..prune.plan import PLAN_KEY, compose_plans
from .common import FINITE, NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_path, load_data_for, open_model

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("prune-channels", help="remove whole channels/filters (a smaller dense model), fine-tune")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", action=FINITE, help="fraction of each layer's channels removed, e.g. 0.3")
    how.add_argument("--macs-target", action=FINITE, help="fraction of the MACs kept, e.g. 0.5 halves them")
    p.add_argument("--criterion", choices=list(CRITERIA), default="l1",
                   help="l1/l2 filter norm, fro (input-channel norm), fpgm, bn (BatchNorm scale), random")
    p.add_argument("--scope", choices=SCOPES, default="layer",
                   help="layer: one ratio for every layer; global: one ranking across layers")
    p.add_argument("--round-to", type=int, default=1,
                   help="keep channel counts a multiple of this: 16 fills the AVX-512 lanes of fp32 CPU kernels "
                        "(other counts measured here fall off oneDNN's and ONNX Runtime's blocked kernels)")
    p.add_argument("--rounds", type=int, default=1, help="prune in this many steps, fine-tuning between")
    p.add_argument("--finetune-epochs", type=int, default=3, help="total fine-tuning epochs")
    p.add_argument("--lr", action=POSITIVE, help="fine-tuning LR (default: a tenth of the model's training LR)")
    p.add_argument("--weight-decay", action=NON_NEGATIVE, help="default: the model's training weight decay")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_prune_channels)


def cmd_prune_channels(args) -> int:
    check_output_path(args.out)
    if args.round_to < 1:
        raise ConfigError(f"--round-to must be >= 1, got {args.round_to}")
    model, info = open_model(args, args.file)
    ds = load_data_for(info, args.data, args, args.file)
    trained = info.train_config()
    cfg = ChannelConfig(ratio=args.ratio, macs_target=args.macs_target, criterion=args.criterion,
                        scope=args.scope, rounds=args.rounds, epochs=args.finetune_epochs,
                        lr=args.lr if args.lr is not None else trained.get("lr", 0.1) / 10,
                        weight_decay=args.weight_decay if args.weight_decay is not None
                        else trained.get("weight_decay", 5e-4),
                        augment=bool(trained.get("augment", True)),
                        label_smoothing=trained.get("label_smoothing", 0.0), round_to=args.round_to,
                        seed=args.seed, progress=not args.no_progress)
    torch.manual_seed(args.seed)
    example = torch.randn(1, *info.input_shape)
    result = prune_channels_and_finetune(model, ds, example, cfg)
    old = info.extra.get(PLAN_KEY)
    plan = compose_plans(ChannelPlan.from_dict(old, f"{args.file}: channel_plan"), result.plan) if old else result.plan
    info.extra[PLAN_KEY] = plan.to_dict()
    info.accuracy = result.accuracy_after
    info.history.append({"op": "prune_channels", "config": asdict(cfg), **result.to_dict()})
    model.to(memory_format=torch.contiguous_format)
    save_model(model, args.out, info)
    for rec in result.rounds:
        print(f"round {rec['round']}: MACs {rec['macs']:,}  accuracy after the cut {rec['accuracy_pruned'] * 100:.2f}%"
              + (f", after fine-tuning {rec['accuracy_tuned'] * 100:.2f}%" if "accuracy_tuned" in rec else ""))
    print(f"MACs {result.macs_before:,} -> {result.macs_after:,} ({result.macs_ratio:.3f}x)  "
          f"params {result.params_before:,} -> {result.params_after:,}")
    print(f"accuracy {result.accuracy_before * 100:.2f}% -> {result.accuracy_after * 100:.2f}%  "
          f"({(result.accuracy_after - result.accuracy_before) * 100:+.2f} pp)")
    print(f"-> {args.out}")
    return 0
