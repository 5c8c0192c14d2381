"""``deepshrink sensitivity``: prune each layer alone over a sparsity grid; curves as JSON and PNG."""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..pipelines.sensitivity import ScanConfig, sensitivity_file
from ..prune import RULES
from .common import (NON_NEGATIVE, add_model_file_args, add_progress_arg, add_target_args, add_val_size_arg,
                     check_scan_outputs, check_val_size_arg, model_file_options, target_globs)

__all__ = ["register", "parse_grid", "MAX_GRID"]

MAX_GRID = 1000        # sparsities one scan may hold (each one prunes and evaluates every layer)
ELLIPSIS = ("...", "\u2026")


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="prune each layer alone over a sparsity grid; curves as PNG")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="folder for sensitivity.json and the curves' PNG; a missing folder is created")
    p.add_argument("--sparsities", default=",".join(map(str, ScanConfig.sparsities)),
                   help="grid of fractions, e.g. 0.5,0.7,0.9, or 0.4,0.5,...,0.9 ('...' goes on in the step of "
                        "the two numbers before it up to the one after) (default: %(default)s)")
    p.add_argument("--rule", choices=RULES, default=ScanConfig.rule,
                   help="which weights go: the smallest by this rule (default: %(default)s)")
    add_target_args(p)
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_val_size_arg(p, "the curves are measured", aliases=("--eval-size",), removed=("--eval",))
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=ScanConfig.max_drop,
                   help="accuracy budget line, percentage points (default: %(default)s)")
    add_progress_arg(p)
    add_model_file_args(p)
    p.set_defaults(func=cmd_sensitivity)


def _continue(before: list[float], end: float, text: str, flag: str) -> list[float]:
    """The values an ellipsis stands for: on from ``before[-1]`` in the step of ``before``'s last
    two, up to (not including) ``end``, which must lie on that step."""
    bad = f"{flag} {text!r}: '...' needs two numbers before it and one after, on one step, e.g. 0.4,0.5,...,0.9"
    if len(before) < 2:
        raise ConfigError(bad)
    a, b = before[-2], before[-1]
    step = b - a
    if not step or not math.isfinite(step):
        raise ConfigError(bad)
    n = (end - b) / step
    if not math.isfinite(n) or n < 1 - 1e-9 or abs(n - round(n)) > 1e-6:
        raise ConfigError(bad)
    if round(n) > MAX_GRID:
        raise ConfigError(f"{flag} {text!r}: more than {MAX_GRID} sparsities")
    return [round(b + k * step, 10) for k in range(1, round(n))]


def parse_grid(text: str, flag: str = "--sparsities") -> tuple[float, ...]:
    """A sparsity grid: fractions in [0, 1] separated by commas, where ``...`` continues the step
    of the two numbers before it up to the number after it (``0.4,0.5,...,0.9``); else one ConfigError."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    grid: list[float] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        try:
            if tok in ELLIPSIS:
                end = float(tokens[i + 1]) if i + 1 < len(tokens) and tokens[i + 1] not in ELLIPSIS else math.nan
                grid += _continue(grid, end, text, flag)
            else:
                grid.append(float(tok))
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: expected numbers like 0.5,0.7,0.9 or 0.4,0.5,...,0.9") from None
        i += 1
    if not grid or len(grid) > MAX_GRID or not all(0 <= s <= 1 for s in grid):  # NaN fails this test too
        raise ConfigError(f"{flag} {text!r}: expected at most {MAX_GRID} fractions in [0, 1] like 0.5,0.7,0.9")
    return tuple(grid)


def cmd_sensitivity(args) -> int:
    check_scan_outputs(args.out_dir, "--out-dir")
    check_val_size_arg(args)
    cfg = ScanConfig(sparsities=parse_grid(args.sparsities), rule=args.rule, val_size=args.val_size,
                     max_drop=args.max_drop, progress=not args.no_progress, **target_globs(args))
    run = sensitivity_file(args.file, args.out_dir, cfg, data=args.data, **model_file_options(args))
    scan = run.scan
    grid = scan["sparsities"]
    metric = scan.get("metric", "accuracy")
    print(f"{metric} (%) on {scan['evaluated_on']}")
    print(f"dense model: {scan['dense'] * 100:.2f}%")
    print(f"{'layer':<24}{'params':>10}  " + "  ".join(f"{s:>6.2f}" for s in grid))
    for name, v in scan["layers"].items():
        print(f"{name:<24}{v['params']:>10,}  " + "  ".join(f"{a * 100:6.2f}" for a in v["accuracy"]))
    print(f"outputs: {run.json_path}, {run.png_path}")
    return 0
