"""``deepshrink filter-analysis``: Li et al. 2017's filter-pruning analyses and the lab's channel-sorting
test on the validation split; numbers as JSON, one PNG per analysis, a compact table each."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.filter_analysis import ANALYSES, FilterAnalysisConfig, filter_analysis_file, output_files
from ..prune import CRITERIA
from .common import (add_run_args, add_val_size_arg, check_output_dir, check_output_path, check_val_size_arg,
                     json_output, model_file_options, print_json)
from .parser import add_option
from .sensitivity import parse_grid

__all__ = ["register"]

D = FilterAnalysisConfig


def register(sub) -> None:
    p = sub.add_parser("filter-analysis",
                       help="Li et al. 2017's filter analyses (sensitivity, sorted norms, greedy, which filters, "
                            "channel sorting) as plots")
    p.add_argument("file", help="trained model with conv layers (.safetensors, or .pt/.pth with --model)")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="folder for filter_analysis.json and one PNG per analysis; a missing folder is created")
    p.add_argument("--analyses", default=",".join(D.analyses), metavar="LIST",
                   help="comma-separated, any of: sensitivity (each conv layer pruned alone), norms (sorted filter "
                        "L1 norms), greedy (independent vs greedy scoring), selection (smallest-L1 vs random vs "
                        "largest-L1 filters), sorting (first k channels with and without sorting) "
                        "(default: %(default)s)")
    p.add_argument("--ratios", default="0.1,0.2,...,0.9",
                   help="fractions of each layer's filters removed, in [0, 1), e.g. 0.25,0.5,0.75 or 0.1,0.2,...,0.9 "
                        "('...' goes on in the step of the two numbers before it; default: %(default)s)")
    add_option(p, "--finetune-epochs", aliases=("--retrain-epochs",), dest="retrain_epochs", type=int,
               default=D.retrain_epochs, metavar="N",
               help="sensitivity: also retrain each pruned copy this many epochs (channel-pruning fine-tuning "
                    "settings, on the training images left after the validation split) and plot that too; "
                    "0: no retraining (default: %(default)s)")
    p.add_argument("--random-draws", type=int, default=D.random_draws, metavar="N",
                   help="selection: seeded random draws averaged for the random curve (default: %(default)s)")
    p.add_argument("--sort-criterion", choices=[c for c in CRITERIA if c != "random"], default=D.sort_criterion,
                   help="sorting: channel importance (fro: the next layer's input-channel norm, as the lab does; "
                        "default: %(default)s)")
    add_val_size_arg(p, "every analysis is measured")
    add_run_args(p, D.seed)
    p.set_defaults(func=cmd_filter_analysis)


def _config(args) -> FilterAnalysisConfig:
    """The options as a config, each bad value one error naming its option (before any file is read)."""
    analyses = tuple(a.strip() for a in args.analyses.split(",") if a.strip())
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown or not analyses:
        what = "unknown " + ", ".join(unknown) if unknown else "none given"
        raise ConfigError(f"--analyses {args.analyses!r}: {what}; choose from {', '.join(ANALYSES)}")
    ratios = parse_grid(args.ratios, "--ratios")
    if any(r >= 1 for r in ratios):
        raise ConfigError(f"--ratios {args.ratios!r}: ratios are fractions of filters removed, in [0, 1)")
    for flag, value, least in (("--finetune-epochs", args.retrain_epochs, 0), ("--random-draws", args.random_draws, 1)):
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    cfg = FilterAnalysisConfig(analyses=analyses, ratios=ratios, retrain_epochs=args.retrain_epochs,
                               random_draws=args.random_draws, sort_criterion=args.sort_criterion,
                               val_size=args.val_size, seed=args.seed, progress=not args.no_progress)
    cfg.check()                                  # what is left: an analysis given twice
    return cfg


def _row(label: str, values, width: int = 28) -> str:
    return f"{label:<{width}}" + "".join(f"{v * 100:8.2f}" for v in values)


def _print_tables(report: dict) -> None:
    ratios = report["ratios"]
    head = f"{'ratio removed':<28}" + "".join(f"{r:8.2f}" for r in ratios)
    a = report["analyses"]
    print(f"validation accuracy (%) on {report['evaluated_on']}; unpruned {report['dense'] * 100:.2f}%")
    if "sensitivity" in a:
        s = a["sensitivity"]
        modes = [("accuracy", "no retraining")]
        if s["retrain_epochs"]:
            modes.append(("accuracy_retrained", f"retrained {s['retrain_epochs']} epoch(s)"))
        for key, what in modes:
            print(f"\nsensitivity: each conv layer pruned alone (smallest L1), {what}")
            print(head)
            for name, rec in s["layers"].items():
                print(_row(f"{name} ({rec['channels']})", rec[key]))
    if "norms" in a:
        print(f"\nnorms: filter L1 norms per conv layer\n{'layer':<28}{'filters':>8}{'largest':>10}"
              f"{'median/max':>12}{'min/max':>9}")
        for name, rec in a["norms"]["layers"].items():
            n = rec["normalised"]
            print(f"{name:<28}{rec['filters']:>8}{rec['l1'][0]:>10.4g}{n[len(n) // 2]:>12.3f}{n[-1]:>9.3f}")
    tables = [("greedy", "greedy: all conv layers pruned, next layer scored", ("independent", "greedy")),
              ("selection", "selection: all conv layers pruned, filters removed", ("smallest", "random", "largest")),
              ("sorting", "sorting: first k channels of every conv layer kept", ("unsorted", "sorted"))]
    for name, title, rows in tables:
        if name in a:
            print(f"\n{title}\n{head}")
            for row in rows:
                print(_row(row, a[name][row]))
    print("\noutputs: " + ", ".join(report["plots"].values()))


def cmd_filter_analysis(args) -> int:
    check_val_size_arg(args)
    cfg = _config(args)
    check_output_dir(args.out_dir, "--out-dir")
    for path in output_files(args.out_dir, cfg.analyses, cfg.retrain_epochs > 0).values():
        check_output_path(path, "--out-dir")
    with json_output(args.json):
        run = filter_analysis_file(args.file, args.out_dir, cfg, data=args.data, **model_file_options(args))
    if args.json:
        print_json({"command": "filter-analysis", "out_dir": args.out_dir, "json": run.json_path, **run.report})
        return 0
    _print_tables(run.report)
    print(f"numbers: {run.json_path}")
    return 0
