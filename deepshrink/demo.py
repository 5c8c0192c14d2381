"""``make demo``: the main job on LeNet-5 and Fashion-MNIST.

Trains LeNet-5 with its baseline recipe (or reuses the checkpoint a previous run wrote),
prints its profile line and test accuracy, and writes a per-layer profile report. Later
stages of the pipeline (pruning, quantization, encoding) extend this script.

    python -m deepshrink.demo [--out-dir runs/demo] [--retrain]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import data as data_mod
from .atomic import atomic_write_text
from .errors import DeepShrinkError
from .io import load_model
from .models.recipes import recipe, train_baseline
from .profile import profile_model
from .train import evaluate

__all__ = ["main"]


def run(out_dir: Path, retrain: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "lenet5.safetensors"
    ds = data_mod.load("fashion-mnist")
    if retrain or not ckpt.exists():
        print(f"[1/2] training LeNet-5 on Fashion-MNIST ({len(ds.train)} images) -> {ckpt}", flush=True)
        train_baseline("lenet5", ds, "fashion-mnist", str(ckpt), recipe("lenet5", seed=0))
    else:
        print(f"[1/2] reusing {ckpt} (pass --retrain to train again)", flush=True)
    model, info = load_model(ckpt)
    acc = evaluate(model, ds.test)
    prof = profile_model(model, torch.zeros(1, *info.input_shape))
    report = out_dir / "lenet5_profile.md"
    atomic_write_text(report, f"# LeNet-5 profile\n\ntest accuracy {acc * 100:.2f}%\n\n{prof.to_markdown()}\n")
    print("[2/2] profile and accuracy")
    print(f"  lenet5: {prof.summary()}")
    print(f"  lenet5: test accuracy {acc * 100:.2f}% on {len(ds.test)} Fashion-MNIST test images")
    print(f"outputs: {ckpt} (model), {report} (per-layer profile)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepshrink.demo", description="the deepshrink demo")
    ap.add_argument("--out-dir", default="runs/demo")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args(argv)
    try:
        run(Path(args.out_dir), args.retrain)
    except DeepShrinkError as exc:
        print(f"deepshrink: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
