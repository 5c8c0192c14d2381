"""Dense baselines: Fashion-MNIST test accuracy, parameters, MACs and training time of every
zoo model on this machine. The checkpoints are the baselines later stages compress.

    python benchmarks/baselines.py                 # reuse checkpoints in checkpoints/baselines/
    python benchmarks/baselines.py --retrain vgg   # train vgg again (its recipe, seed 0)

Each model's accuracy is re-measured here from its checkpoint; the training time is the one
recorded in the checkpoint by the run that trained it (``history[0].seconds``).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

import torch

from _results import BASELINES, ROOT, command, write_result

from deepshrink import data as data_mod
from deepshrink import models
from deepshrink.io import load_model
from deepshrink.data import iterate_batches, num_batches
from deepshrink.models.recipes import TARGETS, arch_kwargs, recipe
from deepshrink.pipelines.train import train_baseline
from deepshrink.profile import profile_model
from deepshrink.train import evaluate


def step_seconds(name: str, ds, steps: int = 30, warmup: int = 5, threads: int = 2) -> float:
    """Median seconds of one training step (batch 128, the recipe's optimizer settings), on
    ``threads`` threads: the per-epoch cost without other work competing for the cores."""
    cfg = recipe(name)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.build(name, **arch_kwargs(name, ds))
    if cfg.channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    times = []
    for i, (x, y) in enumerate(iterate_batches(ds.train, cfg.batch_size, shuffle=True, augment=cfg.augment)):
        if i == warmup + steps:
            break
        if x.dim() == 4 and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, path: Path, ds) -> tuple[dict, list]:
    """(raw results, table row) of one baseline checkpoint: accuracy re-measured, size, and the
    training time, as recorded and as estimated from a timed step."""
    model, info = load_model(path)
    t0 = time.perf_counter()
    same_stats = info.mean == ds.mean and info.std == ds.std  # else normalise as the model expects
    acc = evaluate(model, (ds if same_stats else data_mod.load("fashion-mnist", mean=info.mean, std=info.std)).test)
    eval_s = time.perf_counter() - t0
    prof = profile_model(model, torch.zeros(1, *info.input_shape)).totals
    train = info.history[0] if info.history else {}
    cfg = train.get("config", {})
    target = TARGETS[name]
    step_s = step_seconds(name, ds)
    est_s = step_s * num_batches(len(ds.train), cfg.get("batch_size", 128)) * cfg.get("epochs", 0)
    raw = {
        "accuracy": acc, "target": target, "meets_target": acc >= target,
        "params": prof["params"], "macs": prof["macs"],
        "train_seconds": train.get("seconds"), "epochs": cfg.get("epochs"),
        "train_threads": train.get("threads"), "eval_seconds": eval_s,
        "step_seconds_2_threads": step_s, "estimated_train_seconds_2_threads": est_s,
        "checkpoint": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "reproduce": command("baselines", ["--models", name, "--retrain", name]),
    }
    row = [name, f"{acc * 100:.2f}%", f">= {target * 100:.1f}%", "yes" if acc >= target else "NO",
           prof["params"], prof["macs"], cfg.get("epochs"),
           f"{train.get('seconds', float('nan')) / 60:.1f} min ({train.get('threads')} thr.)",
           f"{est_s / 60:.1f} min"]
    print(f"{name:<12} acc {acc * 100:.2f}% (target {target * 100:.1f}%)  params {prof['params']:,}  "
          f"MACs {prof['macs']:,}  trained {train.get('seconds', 0):.0f} s", flush=True)
    return raw, row


NOTES = ["Accuracy re-measured from each checkpoint on the 10,000 test images.",
         "Training time as run: wall time recorded in the checkpoint by the run that trained it, with "
         "the threads it used; the conv nets were trained side by side with other work on the 2 cores, "
         "so these times are inflated. Estimated alone: median of 30 training steps at batch 128 on "
         "2 threads with nothing else running, times the recipe's steps (no evaluation).",
         "Recipes: deepshrink/models/recipes.py; one model: "
         "`deepshrink train --model NAME --out FILE` uses the same recipe."]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=models.names())
    ap.add_argument("--retrain", nargs="*", default=[], help="models to train again")
    ap.add_argument("--dir", default=str(BASELINES))
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    ds = data_mod.load("fashion-mnist")
    rows, raw = [], {}
    for name in args.models:
        path = Path(args.dir) / f"{name}.safetensors"
        if name in args.retrain or not path.exists():
            print(f"training {name} ...", flush=True)
            train_baseline(name, ds, "fashion-mnist", str(path), recipe(name, seed=0, progress=False))
        raw[name], row = measure(name, path, ds)
        rows.append(row)
    write_result("baselines", {
        "title": "Dense baselines on Fashion-MNIST",
        "command": command("baselines"),
        "models": raw,
        "table": {"columns": ["model", "test accuracy", "target", "met", "params", "MACs (1x28x28)",
                              "epochs", "training time as run", "estimated alone (2 threads)"], "rows": rows},
        "notes": NOTES,
    })


if __name__ == "__main__":
    main()
