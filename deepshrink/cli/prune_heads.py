"""``deepshrink prune-heads``: attention heads and FFN neurons removed from a BERT-class transformer;
the head plan kept in the file."""

from __future__ import annotations

from ..hf import DEFAULT_SEQ_LEN, check_seq_len
from ..pipelines.prune_heads import prune_transformer_file
from ..prune.transformer import HEAD_CRITERIA, HeadConfig
from .common import (FINITE, add_json_arg, add_out_arg, add_seed_arg, check_output_path, json_output,
                     output_facts, print_json)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("prune-heads", help="remove attention heads and FFN neurons of a transformer (hf:DIR)")
    p.add_argument("file", help="a Hugging Face model folder hf:DIR, or a deepshrink file written from one")
    add_out_arg(p, "the smaller model (.safetensors, the head plan kept)")
    p.add_argument("--ratio", action=FINITE, required=True,
                   help="fraction of the blocks' head + FFN MACs removed, in (0, 1), the same in every block")
    p.add_argument("--criterion", choices=HEAD_CRITERIA, default=HeadConfig.criterion,
                   help="l1/l2: norm of each head's and neuron's weights; taylor: first-order Taylor importance "
                        "on --data (default: %(default)s)")
    p.add_argument("--data", metavar="text:FILE",
                   help="sentences, one a line: taylor calibrates on the training split, and the pruned model's "
                        "fidelity to the original is reported on the held-out split (default: none)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="epochs of distillation back towards the unpruned model on --data's training sentences "
                        "(its output and every block's hidden states; default: %(default)s, none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.add_argument("--batches", type=int, default=HeadConfig.batches,
                   help="taylor: calibration batches (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=HeadConfig.batch_size,
                   help="taylor: sentences per calibration batch (default: %(default)s)")
    p.add_argument("--seq-len", dest="seq_len", type=int, metavar="N",
                   help=f"tokens per sentence (default: the file's; {DEFAULT_SEQ_LEN} for hf:DIR)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="the tokenizer folder for text:FILE data (default: the one the model records)")
    add_seed_arg(p, HeadConfig.seed)
    add_json_arg(p)
    p.set_defaults(func=cmd_prune_heads)


def cmd_prune_heads(args) -> int:
    check_output_path(args.out)
    seq_len = check_seq_len(args.seq_len, "--seq-len") if args.seq_len is not None else None
    with json_output(args.json):
        run = prune_transformer_file(args.file, args.out, args.ratio, args.criterion, args.data,
                                     batches=args.batches, batch_size=args.batch_size, seed=args.seed,
                                     seq_len=seq_len, tokenizer=args.tokenizer,
                                     finetune_epochs=args.finetune_epochs, progress=not args.no_progress)
    if args.json:
        print_json({"command": "prune-heads", **output_facts(args.out), "file": args.file, **run.to_dict()})
        return 0
    for name, parts in run.cut.layers.items():
        print(f"{name}: heads kept {parts.get('heads', 'all')}, FFN neurons kept "
              f"{len(parts['ffn']) if 'ffn' in parts else 'all'}")
    print(f"MACs {run.macs_before:,} -> {run.macs_after:,} ({run.macs_after / run.macs_before:.3f}x)  "
          f"params {run.params_before:,} -> {run.params_after:,}")
    if run.fidelity_cut is not None:
        print(f"fidelity to the original on {run.fidelity_cut.samples} held-out sentences right after the cut: "
              f"mean cosine {run.fidelity_cut.cosine_mean:.4f} (min {run.fidelity_cut.cosine_min:.4f})")
    if run.fidelity is not None:
        after = f" after {run.finetune_epochs:g} epochs of distillation" if run.finetune_epochs else ""
        print(f"fidelity to the original on {run.fidelity.samples} held-out sentences{after}: mean cosine "
              f"{run.fidelity.cosine_mean:.4f} (min {run.fidelity.cosine_min:.4f})")
    print(f"-> {args.out}")
    return 0
