"""``sensitivity`` and ``prune`` (fine-grained)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..atomic import atomic_write_text
from ..data import Split
from ..distill import cached_teacher_loss, load_teacher
from ..distill.losses import check_settings
from ..errors import ConfigError
from ..io import save_model
from ..prune import (DEFAULT_GRID, RULES, SCHEDULES, PruneConfig, choose_sparsities, layer_sparsities,
                     plot_sensitivity, prune_and_finetune, sensitivity_scan)
from ..report import plot_weight_histograms
from ..train import evaluate
from .common import (FRACTION, FRACTION_BELOW_ONE, NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_dir,
                     check_output_path, load_data_for, open_model)

__all__ = ["register", "scan_split"]


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="prune each layer alone over a sparsity grid; curves as PNG")
    p.add_argument("file")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--sparsities", default=",".join(map(str, DEFAULT_GRID)), help="grid, e.g. 0.4,0.5,...,0.9")
    p.add_argument("--rule", choices=RULES, default="magnitude")
    _eval_args(p)
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=0.5, help="accuracy budget line, percentage points")
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("prune", help="fine-grained pruning with fine-tuning; masks kept in the file")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--sparsity", action=FRACTION_BELOW_ONE, required=True, help="target fraction of zeros, e.g. 0.92")
    p.add_argument("--rule", choices=RULES, default="magnitude")
    p.add_argument("--scope", choices=["layer", "global"], default="layer")
    p.add_argument("--schedule", choices=SCHEDULES, default="agp")
    p.add_argument("--auto", action="store_true",
                   help="per-layer sparsities from a sensitivity scan (weighted by parameter count)")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--lr", action=POSITIVE, help="fine-tuning LR (default: the model's training LR)")
    p.add_argument("--weight-decay", action=NON_NEGATIVE, help="default: the model's training weight decay")
    p.add_argument("--penalty", choices=["l1", "l2"], help="weight penalty during fine-tuning")
    p.add_argument("--penalty-lambda", action=NON_NEGATIVE, default=1e-5)
    p.add_argument("--distill", action="store_true",
                   help="fine-tune against the unpruned model's soft targets (KD)")
    p.add_argument("--teacher", metavar="FILE",
                   help="fine-tune against this model's soft targets instead (e.g. a larger baseline)")
    p.add_argument("--kd-temperature", action=POSITIVE, default=4.0, help="KD temperature (default 4)")
    p.add_argument("--kd-alpha", action=FRACTION, default=0.9, help="weight of the KD term (default 0.9)")
    p.add_argument("--adjust-dropout", action="store_true",
                   help="Han's dropout adjustment D_r = D_o sqrt(C_r/C_o) for the pruned layers")
    p.add_argument("--remove-dead", action="store_true", help="drop hidden units left with no input/output")
    p.add_argument("--plots", help="folder for weight histograms (and the scan's curves with --auto)")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    _eval_args(p, with_data=False)
    add_model_file_args(p)
    p.set_defaults(func=cmd_prune)


def _eval_args(p, with_data: bool = True) -> None:
    if with_data:
        p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--eval", choices=["train-slice", "test"], default="train-slice",
                   help="scan on the last --eval-size training images (default: keeps the test split "
                        "out of the choice; they were seen in training, so accuracies read higher) or the test split")
    p.add_argument("--eval-size", type=int, default=5000, help="images in the training slice")


def scan_split(ds, which: str, size: int) -> tuple[Split, str]:
    """The split a scan evaluates on, and a label saying which it is."""
    if which == "test":
        return ds.test, f"test split ({len(ds.test)} images)"
    if size < 1:
        raise ConfigError(f"--eval-size must be >= 1, got {size}")
    n = min(size, len(ds.train))
    return Split(ds.train.x[-n:], ds.train.y[-n:]), f"last {n} images of the training split (seen in training)"


def _grid(text: str) -> list[float]:
    try:
        grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sparsities {text!r}: expected numbers like 0.5,0.7,0.9") from None
    if not grid or not all(0 <= s <= 1 for s in grid):  # NaN fails this test too
        raise ConfigError(f"--sparsities {text!r}: expected fractions in [0, 1] like 0.5,0.7,0.9")
    return grid


def _check_scan_outputs(out_dir: str, flag: str) -> None:
    """The folder a sensitivity scan writes (as typed: ``Path('')`` would read as ``.``), and its two files."""
    check_output_dir(out_dir, flag)
    for name in ("sensitivity.json", "sensitivity.png"):
        check_output_path(Path(out_dir) / name, flag)


def _run_scan(model, ds, args, out_dir: Path, grid, max_drop_pp: float) -> dict:
    split, label = scan_split(ds, args.eval, args.eval_size)
    print(f"sensitivity scan on the {label}", flush=True)
    scan = sensitivity_scan(model, lambda m: evaluate(m, split), grid, rule=args.rule,
                            progress=not getattr(args, "no_progress", False))
    scan["evaluated_on"] = label
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "sensitivity.json", json.dumps(scan, indent=1) + "\n")
    plot_sensitivity(scan, out_dir / "sensitivity.png", max_drop=max_drop_pp / 100)
    return scan


def cmd_sensitivity(args) -> int:
    _check_scan_outputs(args.out_dir, "--out-dir")
    grid = _grid(args.sparsities)
    model, info = open_model(args, args.file)
    ds = load_data_for(info, args.data, args, args.file)
    out = Path(args.out_dir)
    scan = _run_scan(model, ds, args, out, grid, args.max_drop)
    grid = scan["sparsities"]
    print(f"dense accuracy {scan['dense'] * 100:.2f}%")
    print(f"{'layer':<24}{'params':>10}  " + "  ".join(f"{s:>6.2f}" for s in grid))
    for name, v in scan["layers"].items():
        print(f"{name:<24}{v['params']:>10,}  " + "  ".join(f"{a * 100:6.2f}" for a in v["accuracy"]))
    print(f"outputs: {out / 'sensitivity.json'}, {out / 'sensitivity.png'}")
    return 0


def _teacher_loss(args, ds, cfg: PruneConfig):
    """KD from ``--teacher`` (its logits for the training split cached when fine-tuning does not
    augment)."""
    teacher = load_teacher(args.teacher, ds, getattr(args, "arch", None), getattr(args, "trust_code", False))
    loss_fn = cached_teacher_loss(teacher, ds.train, cfg.augment, args.kd_temperature, args.kd_alpha)
    print(f"teacher {args.teacher}: {evaluate(teacher, ds.test) * 100:.2f}% on the test images"
          + ("; its training-set logits cached" if loss_fn.targets.cache is not None else ""), flush=True)
    return loss_fn


def cmd_prune(args) -> int:
    check_output_path(args.out)
    if args.plots is not None:
        check_output_dir(args.plots, "--plots")
        for name in ("weights_all.png", "weights_nonzero.png"):
            check_output_path(Path(args.plots) / name, "--plots")
    if args.auto:
        _check_scan_outputs(args.plots if args.plots is not None else str(Path(args.out).parent / "sensitivity"),
                            "--plots" if args.plots is not None else "--auto (its scan folder beside --out)")
    if not 0 <= args.sparsity < 1:
        raise ConfigError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.auto and args.scope == "global":
        raise ConfigError("--auto chooses one sparsity per layer; it cannot be combined with --scope global")
    if args.distill and args.teacher:
        raise ConfigError("give --distill (the unpruned model as teacher) or --teacher FILE, not both")
    check_settings(args.kd_temperature, args.kd_alpha, "kl")
    model, info = open_model(args, args.file)
    ds = load_data_for(info, args.data, args, args.file)
    target: float | dict = args.sparsity
    plots = Path(args.plots) if args.plots else None
    if args.auto:
        scan = _run_scan(model, ds, args, plots or Path(args.out).parent / "sensitivity",
                         sorted(set(DEFAULT_GRID) | {0.95, 0.98}), 0.5)
        target = choose_sparsities(scan, target_sparsity=args.sparsity)
        print("per-layer sparsities: " + ", ".join(f"{k} {v:.3f}" for k, v in target.items()))
    trained = info.train_config()
    cfg = PruneConfig(sparsity=target, rule=args.rule, scope=args.scope,
                      schedule=args.schedule, epochs=args.finetune_epochs,
                      lr=args.lr if args.lr is not None else trained.get("lr", 0.01),
                      weight_decay=args.weight_decay if args.weight_decay is not None
                      else trained.get("weight_decay", 5e-4),
                      penalty=args.penalty, penalty_lambda=args.penalty_lambda, distill=args.distill,
                      kd_temperature=args.kd_temperature, kd_alpha=args.kd_alpha,
                      adjust_dropout=args.adjust_dropout, remove_dead=args.remove_dead,
                      augment=bool(trained.get("augment", True)), seed=args.seed, progress=not args.no_progress)
    loss_fn = _teacher_loss(args, ds, cfg) if args.teacher else None
    result = prune_and_finetune(model, ds, cfg, loss_fn=loss_fn)
    info.accuracy = result.accuracy_after
    info.history.append({"op": "prune", "config": asdict(cfg), **({"teacher": str(args.teacher)} if args.teacher else {}),
                         **{k: v for k, v in result.to_dict().items() if k != "fits"}})
    save_model(model, args.out, info)
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        plot_weight_histograms(model, plots / "weights_all.png")
        plot_weight_histograms(model, plots / "weights_nonzero.png", nonzero_only=True)
    print(f"{'layer':<24}{'sparsity':>10}")
    for name, s in layer_sparsities(model).items():
        print(f"{name:<24}{s * 100:>9.2f}%")
    print(f"total sparsity {result.sparsity * 100:.2f}%  accuracy {result.accuracy_before * 100:.2f}% -> "
          f"{result.accuracy_after * 100:.2f}%  ({(result.accuracy_after - result.accuracy_before) * 100:+.2f} pp)")
    if result.dead_removed:
        print("dead units removed: " + ", ".join(f"{k} {v}" for k, v in result.dead_removed.items()))
    print(f"-> {args.out}" + (f" (plots in {plots})" if plots else ""))
    return 0
