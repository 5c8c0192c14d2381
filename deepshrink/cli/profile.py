"""``deepshrink profile``: the per-layer cost table and totals of a model file or zoo model, the
file's bytes on disk beside the model's size, (``--latency``) a timing labelled with the
arithmetic it measured (a fake-quantized model's is fp32 simulation, said so), and (``--memory``)
the peak inference memory, predicted and measured, in total and per layer."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..pipelines.profile import LATENCY_REPEATS, profile_file
from ..profile.table import MODEL_BYTES_MEANS
from .common import parse_kwargs, add_model_file_args, import_typed_code, parse_shape

__all__ = ["register"]

FILE_BYTES_MEANS = "the file's bytes on disk (a model folder: all its files)"
REAL_INT8_HINT = ("the fake-quantized model computes in fp32; for real integer arithmetic: "
                  "deepshrink.quant.to_swap(model) in PyTorch (int8 weights, int8 GEMMs for linear layers), "
                  "or deepshrink export FILE --out OUT.onnx for ONNX Runtime's int8 kernels")


def register(sub) -> None:
    p = sub.add_parser("profile", help="per-layer params, MACs, memory accesses, bits (and latency)")
    p.add_argument("file", nargs="?", help="model file (.safetensors, or .pt/.pth with --model)")
    add_model_file_args(p)
    p.add_argument("--input-shape", help="example input shape, e.g. 1,1,28,28 (default: batch 1 of the model's)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (rows, totals, not_counted: the ops no rule counts; size: the "
                        "model's and the file's bytes; latency with the arithmetic it timed)")
    p.add_argument("--latency", action="store_true",
                   help=f"also measure CPU latency (median of {LATENCY_REPEATS} runs), labelled with what it "
                        "times: a fake-quantized model's is simulated int8 in fp32")
    p.add_argument("--threads", type=int,
                   help="threads for the latency measurement (default: torch's own setting)")
    p.add_argument("--memory", action="store_true",
                   help="also the peak inference memory of one forward pass, predicted from the op graph and "
                        "measured (live tensors; the CPU allocator's own events), in total and per layer")
    p.add_argument("--memory-batch", dest="memory_batch", type=int, metavar="N",
                   help="the batch of the --memory forward pass; implies --memory (default: the input shape's batch)")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    shape = parse_shape(args.input_shape) if args.input_shape else None  # bounded: refused before it is allocated
    import_typed_code(args)  # a --model module:callable may live in the current folder
    run = profile_file(args.file, arch=args.arch, input_shape=shape, latency=args.latency, threads=args.threads,
                       trust_code=args.trust_code, seq_len=args.seq_len,
                       model_kwargs=parse_kwargs(args.model_kwargs) if args.model_kwargs else None,
                       memory=args.memory or args.memory_batch is not None, memory_batch=args.memory_batch)
    if args.json:
        out = run.profile.to_dict()
        out["model"] = run.label
        out["size"] = {"model_bytes": out["totals"]["bytes"], "model_bytes_means": MODEL_BYTES_MEANS,
                       "file_bytes": run.file_bytes, "file_bytes_means": FILE_BYTES_MEANS}
        out["compute"] = run.compute
        if run.latency is not None:
            out["latency"] = {**asdict(run.latency), "compute": run.compute, "simulated": run.simulated}
        if run.early_exit is not None:
            out["early_exit"] = run.early_exit
        if run.memory is not None:
            out["memory"] = run.memory.to_dict()
        print(json.dumps(out))
        return 0
    print(f"{run.label}  input {'x'.join(map(str, run.shape))}")
    print(run.profile.to_markdown())
    print(run.profile.summary())
    if run.file_bytes is not None:
        folder = ", all its files" if run.label.startswith("hf:") else ""
        print(f"file on disk {run.file_bytes:,} B ({run.label}{folder})")
    if run.early_exit is not None:
        ee = run.early_exit
        print(f"early exit ({ee['policy']}, exits at {', '.join(ee['layers'])}): expected MACs per sample "
              f"{ee['expected_macs']:,.0f} ({ee['original_macs'] / max(ee['expected_macs'], 1):.2f}x fewer than the "
              f"{ee['original_macs']:,.0f} above), from the exit shares on {ee['shares_of']}: "
              + " / ".join(f"{v * 100:.1f}%" for v in ee["shares"]))
    if run.memory is not None:
        print(f"\npeak inference memory, one forward at batch {run.memory.batch} (eval, no grad, CPU):")
        print(run.memory.to_markdown())
        print(run.memory.summary())
    if run.latency is not None:
        lat = run.latency
        print(f"latency {lat.median_ms:.3f} ms median (p10 {lat.p10_ms:.3f}, p90 {lat.p90_ms:.3f}) "
              f"over {lat.repeats} runs, {lat.threads} threads: {run.compute}")
        if run.compute.startswith("simulated"):
            print(f"  {REAL_INT8_HINT}")
    return 0
