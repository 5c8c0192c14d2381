"""Dense baselines: Fashion-MNIST test accuracy, parameters, MACs and training time of every
zoo model on this machine. The checkpoints are the baselines later stages compress.

    python benchmarks/baselines.py                 # reuse checkpoints in runs/baselines/
    python benchmarks/baselines.py --retrain vgg   # train vgg again (its recipe, seed 0)

Each model's accuracy is re-measured here from its checkpoint; the training time is the one
recorded in the checkpoint by the run that trained it (``history[0].seconds``).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from _results import ROOT, write_result

from deepshrink import data as data_mod
from deepshrink import models
from deepshrink.io import load_model
from deepshrink.models.recipes import TARGETS, recipe, train_baseline
from deepshrink.profile import profile_model
from deepshrink.train import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=models.names())
    ap.add_argument("--retrain", nargs="*", default=[], help="models to train again")
    ap.add_argument("--dir", default=str(ROOT / "runs" / "baselines"))
    args = ap.parse_args()
    ds = data_mod.load("fashion-mnist")
    rows, raw = [], {}
    for name in args.models:
        path = Path(args.dir) / f"{name}.safetensors"
        if name in args.retrain or not path.exists():
            print(f"training {name} ...", flush=True)
            train_baseline(name, ds, "fashion-mnist", str(path), recipe(name, seed=0, progress=False))
        model, info = load_model(path)
        t0 = time.perf_counter()
        acc = evaluate(model, data_mod.load("fashion-mnist", mean=info.mean, std=info.std).test)
        eval_s = time.perf_counter() - t0
        prof = profile_model(model, torch.zeros(1, *info.input_shape)).totals
        train = info.history[0] if info.history else {}
        cfg = train.get("config", {})
        target = TARGETS[name]
        raw[name] = {
            "accuracy": acc, "target": target, "meets_target": acc >= target,
            "params": prof["params"], "macs": prof["macs"],
            "train_seconds": train.get("seconds"), "epochs": cfg.get("epochs"),
            "train_threads": train.get("threads"), "eval_seconds": eval_s,
            "checkpoint": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "reproduce": f"python benchmarks/baselines.py --models {name} --retrain {name}",
        }
        rows.append([name, f"{acc * 100:.2f}%", f">= {target * 100:.1f}%", "yes" if acc >= target else "NO",
                     prof["params"], prof["macs"], cfg.get("epochs"),
                     f"{train.get('seconds', float('nan')) / 60:.1f} min"])
        print(f"{name:<12} acc {acc * 100:.2f}% (target {target * 100:.1f}%)  params {prof['params']:,}  "
              f"MACs {prof['macs']:,}  trained {train.get('seconds', 0):.0f} s", flush=True)
    write_result("baselines", {
        "title": "Dense baselines on Fashion-MNIST",
        "command": "python benchmarks/baselines.py",
        "models": raw,
        "table": {"columns": ["model", "test accuracy", "target", "met", "params", "MACs (1x28x28)",
                              "epochs", "training time"], "rows": rows},
        "notes": ["Accuracy re-measured from each checkpoint on the 10,000 test images; training time "
                  "as recorded by the training run (2 threads, this machine, other work running beside it).",
                  "Recipes: deepshrink/models/recipes.py; one model: "
                  "`deepshrink train --model NAME --out FILE` uses the same recipe."],
    })


if __name__ == "__main__":
    main()
