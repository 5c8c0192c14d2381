"""``deepshrink run RECIPE FILE --out OUT``: replay a compression recipe (a YAML file of steps) on a
model file and print its ledger (:mod:`deepshrink.pipelines.run_recipe`)."""

from __future__ import annotations

import sys

from ..pipelines.run_recipe import run_recipe
from ..pipelines.run_report import run_report_path
from ..recipe import STEP_KINDS, load_recipe
from .common import (DATA_HELP, add_json_arg, add_model_file_args, add_out_arg, add_progress_arg, check_output_path,
                     json_output, model_file_options, print_json)

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("run", help="replay a compression recipe (YAML steps) on a model file, with a ledger")
    p.add_argument("recipe", help=f"recipe file (YAML): steps: [- prune: {{sparsity: 0.8}}, ...]; steps are "
                                  f"{', '.join(STEP_KINDS)}")
    p.add_argument("file", help="model file to start from (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the last step's model, the ledger in its metadata (.dsz when the recipe ends with encode, "
                   "else .safetensors)")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip timing each step's model against the one before (default: each step timed at batch 1, "
                        "interleaved with the step before)")
    add_progress_arg(p)
    add_json_arg(p, "the output file, the recipe and the ledger")
    add_model_file_args(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    recipe = load_recipe(args.recipe)          # every step checked before anything is read or run
    check_output_path(args.out)
    check_output_path(run_report_path(args.out), "--out (its report)")
    opts = model_file_options(args)
    with json_output(args.json):
        run = run_recipe(recipe, args.file, args.out, data=args.data, latency=args.latency,
                         progress=not args.no_progress, **opts,
                         say=lambda line: print(line, flush=True))
    if args.json:
        print_json({"command": "run", **run.to_dict()})
        return 0
    print(run.table())
    print(f"-> {args.out} (report: {run_report_path(args.out)})", file=sys.stdout)
    return 0
