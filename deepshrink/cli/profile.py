"""``deepshrink profile``: the per-layer cost table and totals of a model file or zoo model."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..pipelines.profile import LATENCY_REPEATS, profile_file
from .common import parse_kwargs, add_model_file_args, parse_shape

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("profile", help="per-layer params, MACs, memory accesses, bits (and latency)")
    p.add_argument("file", nargs="?", help="model file (.safetensors, or .pt/.pth with --model)")
    add_model_file_args(p)
    p.add_argument("--input-shape", help="example input shape, e.g. 1,1,28,28 (default: batch 1 of the model's)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (rows, totals, not_counted: the ops no rule counts)")
    p.add_argument("--latency", action="store_true",
                   help=f"also measure CPU latency (median of {LATENCY_REPEATS} runs)")
    p.add_argument("--threads", type=int, help="threads for the latency measurement")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    shape = parse_shape(args.input_shape) if args.input_shape else None  # bounded: refused before it is allocated
    run = profile_file(args.file, arch=args.arch, input_shape=shape, latency=args.latency, threads=args.threads,
                       trust_code=args.trust_code, seq_len=args.seq_len,
                       model_kwargs=parse_kwargs(args.model_kwargs) if args.model_kwargs else None)
    if args.json:
        out = run.profile.to_dict()
        out["model"] = run.label
        if run.latency is not None:
            out["latency"] = asdict(run.latency)
        print(json.dumps(out))
        return 0
    print(f"{run.label}  input {'x'.join(map(str, run.shape))}")
    print(run.profile.to_markdown())
    print(run.profile.summary())
    if run.latency is not None:
        lat = run.latency
        print(f"latency {lat.median_ms:.3f} ms median (p10 {lat.p10_ms:.3f}, p90 {lat.p90_ms:.3f}) "
              f"over {lat.repeats} runs, {lat.threads} threads")
    return 0
