"""``make demo``: the main job — Deep Compression of LeNet-5 on Fashion-MNIST.

1. takes the trained LeNet-5 baseline kept in ``checkpoints/baselines/`` (``--retrain`` trains
   one with the same recipe instead, about 3 minutes on 2 cores);
2. ``deepshrink compress``: AGP pruning, dead units removed, k-means sharing at widths measured
   per layer (biases too) with centroid fine-tuning, sparse relative indices and entropy coding
   into ``runs/demo/lenet5.dsz``;
3. reads the .dsz back, checks its test accuracy, and prints the per-layer table, the sizes and
   both models' profiles. The report (markdown + plots) lies beside the .dsz file.

    python -m deepshrink.demo [--out-dir runs/demo] [--retrain] [--sparsity 0.95] [--prune-epochs 20]

The settings are compress's own defaults on labelled data; if the accuracy drop
exceeds --max-drop, the pipeline retries two points of sparsity lower (up to --attempts).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import data as data_mod
from .codec import load_compressed
from .compress import CompressConfig, compress_file
from .errors import DeepShrinkError
from .io import load_model
from .models.recipes import recipe
from .pipelines.train import train_baseline
from .profile import profile_model
from .train import evaluate

__all__ = ["main", "BASELINE"]

BASELINE = Path(__file__).resolve().parent.parent / "checkpoints" / "baselines" / "lenet5.safetensors"


def run(out_dir: Path, retrain: bool, sparsity: float, prune_epochs: int, max_drop: float, attempts: int) -> int:
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = BASELINE
    if retrain or not ckpt.exists():
        ckpt = out_dir / "lenet5.safetensors"
        print(f"[1/3] training LeNet-5 on Fashion-MNIST -> {ckpt}", flush=True)
        ds = data_mod.load("fashion-mnist")
        train_baseline("lenet5", ds, "fashion-mnist", str(ckpt), recipe("lenet5", seed=0))
    else:
        print(f"[1/3] the trained LeNet-5 baseline: {ckpt} (pass --retrain to train one)", flush=True)
    dsz = out_dir / "lenet5.dsz"
    print(f"[2/3] deepshrink compress {ckpt.name} --out {dsz} --sparsity {sparsity} --allocation global "
          f"--prune-epochs {prune_epochs} --max-drop {max_drop} --attempts {attempts}", flush=True)
    cfg = CompressConfig(max_drop=max_drop, sparsity=sparsity, allocation="global", prune_epochs=prune_epochs,
                         attempts=attempts)
    result, report, md = compress_file(str(ckpt), str(dsz), cfg)

    print("[3/3] the .dsz file, read back", flush=True)
    dense, info = load_model(ckpt)
    decoded = load_compressed(dsz)
    ds = data_mod.load(data_mod.spec_from_file(None, info.data, str(ckpt)), info.mean, info.std)
    acc_dense, acc_decoded = evaluate(dense, ds.test), evaluate(decoded, ds.test)
    x = torch.zeros(1, *info.input_shape)
    print()
    print(report.to_markdown())
    print()
    print(f"  dense  : {profile_model(dense, x).summary()}")
    print(f"  .dsz   : {profile_model(decoded, x).summary()}")
    print(f"  files  : {ckpt.stat().st_size:,} bytes (fp32 .safetensors) -> {dsz.stat().st_size:,} bytes (.dsz): "
          f"{ckpt.stat().st_size / dsz.stat().st_size:.1f}x smaller vs the fp32 file, "
          f"{report.ratio:.1f}x vs the fp32 parameters alone ({report.dense_bytes:,} bytes, the table's figure)")
    print(f"  test accuracy on {len(ds.test):,} Fashion-MNIST images: {acc_dense * 100:.2f}% -> "
          f"{acc_decoded * 100:.2f}% ({(acc_decoded - acc_dense) * 100:+.2f} pp; budget -{max_drop} pp)")
    print(f"  outputs: {dsz}, report {md} (with plots); {time.perf_counter() - t0:.0f} s in all")
    return 0 if result.within_budget else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepshrink.demo", description="the deepshrink demo")
    ap.add_argument("--out-dir", default="runs/demo")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--prune-epochs", type=int, default=20)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--attempts", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        return run(Path(args.out_dir), args.retrain, args.sparsity, args.prune_epochs, args.max_drop, args.attempts)
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
