"""``profile``: the per-layer cost table and totals of a model file or zoo model."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from .. import models
from ..errors import ConfigError
from ..profile import measure_latency, profile_model
from .common import add_model_file_args, check_input_elements, open_model, parse_shape

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("profile", help="per-layer params, MACs, memory accesses, bits (and latency)")
    p.add_argument("file", nargs="?", help="model file (.safetensors, or .pt/.pth with --model)")
    add_model_file_args(p)
    p.add_argument("--input-shape", help="example input shape, e.g. 1,1,28,28 (default: batch 1 of the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object (rows and totals)")
    p.add_argument("--latency", action="store_true", help="also measure CPU latency (median of 50 runs)")
    p.add_argument("--threads", type=int, help="threads for the latency measurement")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    if args.file:
        model, info = open_model(args, args.file)
        default_shape = (1, *info.input_shape)
        label = args.file
    elif args.arch:
        model = models.build(args.arch)
        default_shape, label = (1, 1, 28, 28), args.arch
    else:
        raise ConfigError("profile needs a model file or --model NAME")
    if args.input_shape:
        shape = parse_shape(args.input_shape)  # bounded: refused before it is allocated
    else:
        shape = default_shape
        check_input_elements(shape, f"{label}: its input_shape {list(shape[1:])}")
    x = torch.zeros(shape)
    try:
        prof = profile_model(model, x)
    except RuntimeError as exc:
        raise ConfigError(f"{label}: the model does not accept input of shape {list(shape)} "
                          f"({str(exc).splitlines()[0]})") from None
    latency = measure_latency(model, x, warmup=5, repeats=50, threads=args.threads) if args.latency else None
    if args.json:
        out = prof.to_dict()
        out["model"] = label
        if latency is not None:
            out["latency"] = asdict(latency)
        print(json.dumps(out))
        return 0
    print(f"{label}  input {'x'.join(map(str, shape))}")
    print(prof.to_markdown())
    print(prof.summary())
    if latency is not None:
        print(f"latency {latency.median_ms:.3f} ms median (p10 {latency.p10_ms:.3f}, p90 {latency.p90_ms:.3f}) "
              f"over {latency.repeats} runs, {latency.threads} threads")
    return 0
