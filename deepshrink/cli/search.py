"""``deepshrink search``: the smallest file (or best score) within an accuracy floor, found by search.

Usage::

    deepshrink search FILE --out m.dsz [--max-drop PP] (--target-ratio R | --target-size BYTES |
                      --target-memory BYTES | --maximize score) [--budget N] [--data SPEC]

Writes ``m.dsz`` and, beside it, ``m.recipe.yaml`` (replay with ``deepshrink run``),
``m.search.json``, ``m.pareto.png`` and ``m.search.html``. Exit 1 when the goal was not met
within the floor (the best candidate tried is still written).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..pipelines.search import SearchConfig, search_file
from ..pipelines.search_output import output_paths
from .common import (NON_NEGATIVE, POSITIVE, add_augment_arg, add_json_arg, add_lr_arg, add_model_file_args,
                     add_out_arg, add_progress_arg, add_seed_arg, add_val_size_arg, augment_choice,
                     check_output_path, check_val_size_arg, json_output, model_file_options, output_facts,
                     print_json)

__all__ = ["register", "cmd_search"]


def register(sub) -> None:
    p = sub.add_parser("search", help="target-driven compression: per-layer sparsity, bits and codebook searched "
                                      "for a ratio, size, memory or score goal under an accuracy floor",
                       description="Walks per-layer sparsity, bit width (8-2) and codebook kind (linear or k-means) "
                                   "one notch at a time, measured without fine-tuning, then fine-tunes a few points "
                                   "of that path with the Deep Compression pipeline and keeps the best one within "
                                   "--max-drop. Every choice is made on a validation split carved from the training "
                                   "data; the test split gives the reported figure once. Writes the .dsz, its "
                                   "recipe (replay with deepshrink run), the candidates as JSON, a Pareto plot and "
                                   "an HTML page.")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the .dsz file (recipe, candidates, plot and page are written beside it)")
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=SearchConfig.max_drop, metavar="PP",
                   help="the accuracy floor: validation points below the dense model (default %(default)s)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--target-ratio", action=POSITIVE, metavar="R",
                      help="goal: at least R times smaller than the fp32 parameters (default: --maximize score)")
    goal.add_argument("--target-size", type=int, metavar="BYTES",
                      help="goal: a .dsz file of at most BYTES (default: --maximize score)")
    goal.add_argument("--target-memory", type=int, metavar="BYTES",
                      help="goal: peak inference memory at batch 1 of at most BYTES (default: --maximize score)")
    goal.add_argument("--maximize", choices=("score",),
                      help="goal: the competition score (deepshrink/score.py) (default: this goal)")
    p.add_argument("--channels", type=float, metavar="F",
                   help="first remove this fraction of the MACs by channel pruning (fine-tuned on the training "
                        "images left after the validation split; lowers peak memory and latency, which weight "
                        "pruning does not), then search on the smaller model (default: none)")
    p.add_argument("--budget", type=int, default=SearchConfig.budget, metavar="N",
                   help="fine-tuned candidates at most, each a Deep Compression run (default %(default)s)")
    p.add_argument("--proxy-size", type=int, default=SearchConfig.proxy_size, metavar="N",
                   help="validation images the walk scores each point on, without fine-tuning (default %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=SearchConfig.prune_epochs, metavar="N",
                   help="pruning fine-tuning epochs of each candidate (default %(default)s)")
    p.add_argument("--centroid-epochs", type=int, default=SearchConfig.centroid_epochs, metavar="N",
                   help="centroid fine-tuning epochs of each candidate (default %(default)s)")
    add_lr_arg(p, "prune")
    add_augment_arg(p)
    add_val_size_arg(p, "the walk, the floor and the choice are judged")
    add_seed_arg(p, SearchConfig.seed)
    add_progress_arg(p)
    add_json_arg(p)
    add_model_file_args(p)
    p.add_argument("--data", help="data spec (default: the one recorded in the model file)")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    check_output_path(args.out)
    for path in output_paths(Path(args.out)).values():
        check_output_path(path, "--out (the files beside it)")
    check_val_size_arg(args)
    for flag, v in (("--target-size", args.target_size), ("--target-memory", args.target_memory)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} must be a positive number of bytes, got {v}")
    if args.budget < 1 or args.proxy_size < 1 or args.finetune_epochs < 0 or args.centroid_epochs < 0:
        raise ConfigError("--budget and --proxy-size must be >= 1, the epochs >= 0")
    cfg = SearchConfig(max_drop=args.max_drop, target_ratio=args.target_ratio, target_size=args.target_size,
                       target_memory=args.target_memory, maximize=args.maximize, budget=args.budget,
                       proxy_size=args.proxy_size, val_size=args.val_size, prune_epochs=args.finetune_epochs,
                       centroid_epochs=args.centroid_epochs, prune_lr=args.lr, augment=augment_choice(args),
                       channels=args.channels, seed=args.seed, progress=not args.no_progress)
    opts = model_file_options(args)
    with json_output(args.json):
        result, paths = search_file(args.file, args.out, cfg, data=args.data, **opts)
    c = result.chosen or (max(result.candidates, key=lambda k: k.val_score) if result.candidates else None)
    if args.json:
        print_json({"command": "search", **(output_facts(args.out) if Path(args.out).exists() else {}),
                    "file": args.file, "goal": result.goal, "met": result.met,
                    "ratio": c.ratio if c else None, "val_accuracy": c.val_score if c else None,
                    "val_accuracy_before": result.dense_val, "val_on": result.val_on,
                    "accuracy_before": result.dense_test, "accuracy": result.test_after, "accuracy_on": result.test_on,
                    "score": c.score if c else None, "candidates": len(result.candidates),
                    **{k: str(v) for k, v in paths.items()}, "seconds": result.seconds})
        return 0 if result.met else 1
    print()
    for cand in result.candidates:
        mark = " <- chosen" if cand is result.chosen else ""
        label = f"point {cand.index:>3}" if cand.index >= 0 else "defaults "
        print(f"  {label}: {cand.file_bytes:>9,} B {cand.ratio:6.1f}x  validation "
              f"{cand.val_score * 100:.2f}% ({-cand.drop_pp:+.2f} pp)  score {cand.score['score']:>9,.1f}"
              f"{'' if cand.feasible else '  (outside the goal)'}{mark}")
    if c is None:
        print("nothing was fine-tuned")
        return 1
    print(f"{'goal met' if result.met else 'GOAL NOT MET (the best candidate tried is written)'}: {c.described}")
    print(f"validation {result.metric} {result.dense_val * 100:.2f}% -> {c.val_score * 100:.2f}% "
          f"({-c.drop_pp:+.2f} pp; floor -{args.max_drop:g} pp) on {result.val_on}")
    print(f"test {result.metric} {result.dense_test * 100:.2f}% -> {result.test_after * 100:.2f}% on "
          f"{result.test_on}, reported only")
    print(f".dsz {c.file_bytes:,} B, {c.ratio:.1f}x smaller than the fp32 parameters; score {c.score['score']:,.1f}")
    print(f"-> {args.out} (recipe: {paths['recipe']}, plot: {paths['pareto']}, page: {paths['html']})")
    return 0 if result.met else 1
