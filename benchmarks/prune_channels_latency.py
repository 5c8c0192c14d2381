"""Where channel pruning's speed goes on this CPU: width layouts x runtimes, dense against pruned.

    python benchmarks/prune_channels_latency.py [--models resnet20 vgg] [--threads 1]
                                                [--repeats-b1 300] [--repeats-b256 12]

Issue #5 asks for a speedup of at least 0.85 x the MAC reduction at batch 1 and at batch 256.
``prune_channels.py`` meets it at batch 256 but not at batch 1. This script asks whether any
layout of the kept channels, in any runtime we have, meets it at batch 1. Latency depends on the
shapes, not on the weights, so nothing here is fine-tuned. The pruned models come from
``prune_channels`` on the trained baselines (L1): uniform ratios that halve the MACs
(``macs_target=0.5``, as in ``prune_channels.py``) and hand-chosen per-group widths, all
multiples of 16 (this AVX-512 CPU's blocked-kernel width). One row is built by hand and
is not something ``prune_channels`` can produce: a whole residual block removed (its first
conv loses every filter, so the block is its BatchNorm shift plus ReLU), to see whether depth
buys what width does not.

Runtimes: PyTorch eager (NCHW); the same with BatchNorm folded into the convs (fx); that graph
traced and frozen with TorchScript (no Python between ops); ONNX Runtime on our fp32 export
(it folds BatchNorm and fuses Conv+ReLU, and runs 16-channel-blocked kernels). Each cell is
``compare_latency``, as in ``prune_channels.py``: dense and pruned interleaved, median of the
per-pair ratios, on ``--threads`` threads. Share = speedup / MAC reduction.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from _results import command, load_baseline, write_result
from prune_channels import counts, latency

from deepshrink.prune import prune_channels

NAME = "prune_channels_latency"
RUNTIMES = ("pytorch", "pytorch bn-folded", "torchscript frozen", "onnxruntime")
TARGET = 0.85

_S2 = ("layer2.0.conv2", "layer2.0.conv1", "layer2.1.conv1", "layer2.2.conv1")
_S3_INNER = ("layer3.0.conv1", "layer3.1.conv1", "layer3.2.conv1")

# (label, prune_channels keyword arguments, blocks removed by hand)
LAYOUTS = {
    "resnet20": [
        ("uniform, round_to 8 (prune_channels.py's model)", {"macs_target": 0.5, "round_to": 8}, ()),
        ("uniform, round_to 16", {"macs_target": 0.5, "round_to": 16}, ()),
        ("stage 1 kept; stage 2 -> 16; stage 3 residual 32, inner 16",
         {"keep": {**dict.fromkeys(_S2, 16), "layer3.0.conv2": 32, **dict.fromkeys(_S3_INNER, 16)}}, ()),
        ("stage 1 kept; stage 2 -> 16; stage 3 -> 32 (MACs not quite halved)",
         {"keep": {**dict.fromkeys(_S2, 16), "layer3.0.conv2": 32, **dict.fromkeys(_S3_INNER, 32)}}, ()),
        ("by hand: block layer1.1 removed; stage 2 -> 16; stage 3 -> 32",
         {"keep": {**dict.fromkeys(_S2, 16), "layer3.0.conv2": 32, **dict.fromkeys(_S3_INNER, 32)}},
         ("layer1.1",)),
    ],
    "vgg": [
        ("uniform, round_to 16 (prune_channels.py's model)", {"macs_target": 0.5, "round_to": 16}, ()),
        ("uniform, round_to 8", {"macs_target": 0.5, "round_to": 8}, ()),
    ],
}


class ShiftReLU(nn.Module):
    """A basic block whose first conv lost every filter: ReLU(x + BN2's shift), exactly."""

    def __init__(self, block: nn.Module):
        super().__init__()
        bn = block.bn2
        shift = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        self.register_buffer("shift", shift.detach().reshape(1, -1, 1, 1))

    def forward(self, x):  # (N, C, H, W) -> (N, C, H, W)
        return torch.relu(x + self.shift)


def build(name: str, kwargs: dict, drop: tuple) -> tuple[nn.Module, nn.Module, dict]:
    """(dense, pruned, kept channels per group)."""
    dense, _, _ = load_baseline(name)
    dense.eval()
    x = torch.zeros(1, 1, 28, 28)
    kwargs = dict(kwargs)
    if "keep" in kwargs:  # per-group widths -> per-group ratios
        sizes = {g: c[0] for g, c in prune_channels(dense, x, ratio=0.0, measure=False).channels.items()}
        keep = kwargs.pop("keep")
        unknown = set(keep) - set(sizes)
        if unknown:
            raise SystemExit(f"{name}: no prunable group named {sorted(unknown)}")
        kwargs["ratio"] = {g: 1 - keep.get(g, s) / s for g, s in sizes.items()}
    r = prune_channels(dense, x, criterion="l1", measure=False, **kwargs)
    pruned = r.model.eval()
    for path in drop:
        stage, i = path.split(".")
        seq = getattr(pruned, stage)
        seq[int(i)] = ShiftReLU(seq[int(i)])
    return dense, pruned, {g: c[1] for g, c in r.channels.items()}


def _channels(keep: dict) -> str:
    return " ".join(f"{g}:{k}" for g, k in keep.items())


def measure(args) -> tuple[list, list, dict]:
    """Every layout of every model, dense against pruned in every runtime: (table rows, raw
    results, per model the best batch-1 share with the MACs at least halved)."""
    rows, raw, best = [], [], {}
    for name in args.models:
        for label, kwargs, drop in LAYOUTS[name]:
            dense, pruned, keep = build(name, kwargs, drop)
            macs0, macs1 = counts(dense)[0], counts(pruned)[0]
            red = macs0 / macs1
            lat = latency(dense, pruned, args, RUNTIMES)
            cells = []
            for runtime in RUNTIMES:
                s1, s256 = lat[runtime]["b1"]["ratio"], lat[runtime]["b256"]["ratio"]
                cells.append(f"{s1:.2f}x / {s256:.2f}x ({s1 / red:.2f} / {s256 / red:.2f})")
                if red >= 2 and s1 / red > best.get(name, (0,))[0]:
                    best[name] = (s1 / red, label, runtime)
            print(f"{name} | {label} | MACs {red:.2f}x fewer | " + " | ".join(
                f"{rt}: {c}" for rt, c in zip(RUNTIMES, cells)), flush=True)
            rows.append([name, label, _channels(keep) + (f" (removed: {', '.join(drop)})" if drop else ""),
                         f"{red:.2f}x", *cells])
            raw.append({"model": name, "layout": label, "kept": keep, "removed_blocks": list(drop),
                        "macs_dense": macs0, "macs_pruned": macs1, "latency": lat})
    return rows, raw, best


def notes(threads: int, best: dict) -> list[str]:
    return [
        "Not fine-tuned: latency depends on the shapes only. Dense and pruned interleaved, median of "
        f"per-pair ratios, {threads} thread(s); share = speedup / MAC reduction; the issue's target "
        f"is {TARGET} at batch 1 and at batch 256.",
        "PyTorch channels_last is in prune_channels.py's table (no better than NCHW at batch 1). "
        "TorchScript with optimize_for_inference (oneDNN layouts) was slower relative to dense in "
        "trial runs and is left out.",
        *(f"Best batch-1 share with MACs at least halved, {n}: {s:.2f} ({lab}; {rt}); target {TARGET}."
          for n, (s, lab, rt) in best.items()),
    ]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats-b1", type=int, default=300)
    ap.add_argument("--repeats-b256", type=int, default=12)
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows, raw, best = measure(args)
    write_result(NAME, {
        "title": "Structured pruning: batch-1 and batch-256 speed by channel layout and runtime",
        "command": command(NAME, [f"--models {' '.join(args.models)}", f"--threads {args.threads}",
                                  f"--repeats-b1 {args.repeats_b1}", f"--repeats-b256 {args.repeats_b256}"]),
        "table": {"columns": ["model", "layout", "kept channels per group", "MAC reduction",
                              *(f"{rt}: speedup b1 / b256 (share)" for rt in RUNTIMES)],
                  "rows": rows},
        "notes": notes(args.threads, best),
        "runs": raw,
    })


if __name__ == "__main__":
    main()
