"""``make demo``: the main job on LeNet-5 and Fashion-MNIST.

1. trains LeNet-5 with its baseline recipe (or reuses the checkpoint a previous run wrote);
2. prunes it to 92% sparsity (global magnitude ranking, AGP over 10 fine-tuning epochs);
3. prints both models' profile lines and test accuracies and writes a per-layer report.
Later stages of the pipeline (quantization, encoding) extend this script.

    python -m deepshrink.demo [--out-dir runs/demo] [--retrain] [--sparsity 0.92] [--prune-epochs 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import data as data_mod
from .atomic import atomic_write_text
from .errors import DeepShrinkError
from .io import load_model, save_model
from .models.recipes import recipe, train_baseline
from .profile import profile_model
from .prune import PruneConfig, prune_and_finetune
from .report import plot_weight_histograms
from .train import evaluate

__all__ = ["main"]


def run(out_dir: Path, retrain: bool, sparsity: float = 0.92, prune_epochs: int = 10) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "lenet5.safetensors"
    ds = data_mod.load("fashion-mnist")
    if retrain or not ckpt.exists():
        print(f"[1/3] training LeNet-5 on Fashion-MNIST ({len(ds.train)} images) -> {ckpt}", flush=True)
        train_baseline("lenet5", ds, "fashion-mnist", str(ckpt), recipe("lenet5", seed=0))
    else:
        print(f"[1/3] reusing {ckpt} (pass --retrain to train again)", flush=True)
    model, info = load_model(ckpt)
    x = torch.zeros(1, *info.input_shape)
    dense_prof, dense_acc = profile_model(model, x), evaluate(model, ds.test)

    print(f"[2/3] pruning to {sparsity:.0%} sparsity (global magnitude, AGP, {prune_epochs} epochs)", flush=True)
    trained = info.train_config()
    result = prune_and_finetune(model, ds, PruneConfig(
        sparsity=sparsity, scope="global", schedule="agp", epochs=prune_epochs,
        lr=trained.get("lr", 0.05), weight_decay=trained.get("weight_decay", 5e-4), seed=0))
    pruned = out_dir / "lenet5_pruned.safetensors"
    info.accuracy = result.accuracy_after
    info.history.append({"op": "prune", "sparsity": result.sparsity, "accuracy": result.accuracy_after})
    save_model(model, pruned, info)
    plot_weight_histograms(model, out_dir / "lenet5_pruned_weights.png", nonzero_only=True)
    sparse_prof = profile_model(model, x)

    report = out_dir / "report.md"
    atomic_write_text(report, (
        f"# LeNet-5 on Fashion-MNIST\n\n## Dense\n\ntest accuracy {dense_acc * 100:.2f}%\n\n"
        f"{dense_prof.to_markdown()}\n\n## Pruned to {result.sparsity:.1%}\n\n"
        f"test accuracy {result.accuracy_after * 100:.2f}%\n\n{sparse_prof.to_markdown()}\n"))
    print("[3/3] profiles and accuracy")
    print(f"  dense : {dense_prof.summary()}")
    print(f"          test accuracy {dense_acc * 100:.2f}% on {len(ds.test)} Fashion-MNIST test images")
    print(f"  pruned: {sparse_prof.summary()}")
    print(f"          test accuracy {result.accuracy_after * 100:.2f}% "
          f"({(result.accuracy_after - dense_acc) * 100:+.2f} pp), nonzero MACs "
          f"{sparse_prof.totals['nonzero_macs']:,} of {sparse_prof.totals['macs']:,}")
    print(f"outputs: {ckpt} (dense model), {pruned} (pruned model, masks inside), {report} (per-layer "
          f"profiles), {out_dir / 'lenet5_pruned_weights.png'} (weight histograms)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepshrink.demo", description="the deepshrink demo")
    ap.add_argument("--out-dir", default="runs/demo")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--sparsity", type=float, default=0.92)
    ap.add_argument("--prune-epochs", type=int, default=10)
    args = ap.parse_args(argv)
    try:
        run(Path(args.out_dir), args.retrain, args.sparsity, args.prune_epochs)
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
