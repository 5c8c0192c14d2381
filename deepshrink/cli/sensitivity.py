"""``deepshrink sensitivity``: prune each layer alone over a sparsity grid; curves as JSON and PNG."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.sensitivity import ScanConfig, sensitivity_file
from ..prune import RULES
from .common import (NON_NEGATIVE, add_model_file_args, add_target_args, add_val_size_arg, check_scan_outputs,
                     check_val_size_arg, model_file_options, target_globs)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="prune each layer alone over a sparsity grid; curves as PNG")
    p.add_argument("file")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--sparsities", default=",".join(map(str, ScanConfig.sparsities)),
                   help="grid, e.g. 0.4,0.5,...,0.9 (default: %(default)s)")
    p.add_argument("--rule", choices=RULES, default=ScanConfig.rule, help="default: %(default)s")
    add_target_args(p)
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_val_size_arg(p, "the curves are measured", aliases=("--eval-size",), removed=("--eval",))
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=ScanConfig.max_drop,
                   help="accuracy budget line, percentage points (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_sensitivity)


def _parse_grid(text: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--sparsities {text!r}: expected numbers like 0.5,0.7,0.9") from None
    if not grid or not all(0 <= s <= 1 for s in grid):  # NaN fails this test too
        raise ConfigError(f"--sparsities {text!r}: expected fractions in [0, 1] like 0.5,0.7,0.9")
    return grid


def cmd_sensitivity(args) -> int:
    check_scan_outputs(args.out_dir, "--out-dir")
    check_val_size_arg(args)
    cfg = ScanConfig(sparsities=_parse_grid(args.sparsities), rule=args.rule, val_size=args.val_size,
                     max_drop=args.max_drop, progress=not args.no_progress, **target_globs(args))
    run = sensitivity_file(args.file, args.out_dir, cfg, data=args.data, **model_file_options(args))
    scan = run.scan
    grid = scan["sparsities"]
    print(f"accuracies on {scan['evaluated_on']}")
    print(f"dense accuracy {scan['dense'] * 100:.2f}%")
    print(f"{'layer':<24}{'params':>10}  " + "  ".join(f"{s:>6.2f}" for s in grid))
    for name, v in scan["layers"].items():
        print(f"{name:<24}{v['params']:>10,}  " + "  ".join(f"{a * 100:6.2f}" for a in v["accuracy"]))
    print(f"outputs: {run.json_path}, {run.png_path}")
    return 0
