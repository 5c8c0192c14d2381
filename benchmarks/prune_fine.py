"""Fine-grained pruning on Fashion-MNIST: LeNet-300-100 and LeNet-5, ours against
``torch.nn.utils.prune.global_unstructured`` (L1) at the same sparsity, with the same
fine-tuning budget (epochs, LR, weight decay, batch order, seed), in the same process.

    python benchmarks/prune_fine.py [--models lenet300 lenet5] [--epochs-lenet5 20]

Ours: global magnitude ranking, AGP from 0 to the target over the first 70% of the
fine-tuning steps (masks held after). Peer: one-shot global L1 pruning (its API), then the
same fine-tuning through deepshrink.train.fit; PyTorch's forward pre-hook keeps the pruned
weights at zero. Also: the highest sparsity ours reaches within 0.5 pp (a ladder of
targets, stopping at the first miss), and the time of the LeNet-5 sensitivity scan
(4 layers x 6 sparsities, full test set). Baseline checkpoints come from
benchmarks/baselines.py (checkpoints/baselines/, kept in git).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from _results import ROOT, write_result

from deepshrink import data as data_mod
from deepshrink.io import load_model
from deepshrink.prune import PruneConfig, prune_and_finetune, prunable_weights, sensitivity_scan, sparsity
from deepshrink.train import TrainConfig, evaluate, fit

LADDER = (0.95, 0.96, 0.97, 0.98, 0.99)


def baseline(name: str):
    path = ROOT / "checkpoints" / "baselines" / f"{name}.safetensors"
    model, info = load_model(path)
    return model, info, info.history[0]["config"]


def ours(name: str, ds, target: float, epochs: int) -> dict:
    model, info, trained = baseline(name)
    t0 = time.perf_counter()
    cfg = PruneConfig(sparsity=target, rule="magnitude", scope="global", schedule="agp", epochs=epochs,
                      lr=trained["lr"], weight_decay=trained["weight_decay"], augment=trained["augment"],
                      seed=0, progress=False, verbose=False)
    r = prune_and_finetune(model, ds, cfg)
    return {"sparsity": r.sparsity, "accuracy": r.accuracy_after, "seconds": time.perf_counter() - t0,
            "layers": r.layers}


def peer(name: str, ds, target: float, epochs: int) -> dict:
    model, info, trained = baseline(name)
    t0 = time.perf_counter()
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=target)
    pruned_acc = evaluate(model, ds.test)
    cfg = TrainConfig(epochs=epochs, lr=trained["lr"], weight_decay=trained["weight_decay"],
                      augment=trained["augment"], seed=0, progress=False, verbose=False, eval_every=0)
    fit(model, ds, cfg)
    for m, p in params:
        tprune.remove(m, p)
    return {"sparsity": sparsity(model), "accuracy": evaluate(model, ds.test), "accuracy_oneshot": pruned_acc,
            "seconds": time.perf_counter() - t0}


def scan_time(ds) -> dict:
    model, _, _ = baseline("lenet5")
    t0 = time.perf_counter()
    scan = sensitivity_scan(model, lambda m: evaluate(m, ds.test), progress=False)
    return {"seconds": time.perf_counter() - t0, "layers": len(scan["layers"]),
            "sparsities": len(scan["sparsities"]), "images": len(ds.test), "scan": scan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["lenet300", "lenet5"])
    ap.add_argument("--epochs-lenet300", type=int, default=30)
    ap.add_argument("--epochs-lenet5", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = data_mod.load("fashion-mnist")
    results, rows = {}, []
    for name in args.models:
        epochs = getattr(args, f"epochs_{name}")
        model, info, _ = baseline(name)
        dense = evaluate(model, ds.test)
        o92, p92 = ours(name, ds, 0.92, epochs), peer(name, ds, 0.92, epochs)
        ladder, best = [], None
        for s in LADDER:
            r = ours(name, ds, s, epochs)
            ladder.append(r)
            print(f"{name} ours @{s}: {r['accuracy'] * 100:.2f}% ({(r['accuracy'] - dense) * 100:+.2f} pp)", flush=True)
            if dense - r["accuracy"] <= 0.005:
                best = r
            else:
                break
        results[name] = {"dense": dense, "epochs": epochs, "ours_92": o92, "peer_92": p92,
                         "ladder": ladder, "highest_within_0.5pp": best}
        for label, r in (("deepshrink AGP global", o92), ("torch.nn.utils.prune global L1", p92)):
            rows.append([name, label, f"{r['sparsity'] * 100:.2f}%", f"{dense * 100:.2f}%",
                         f"{r['accuracy'] * 100:.2f}%", f"{(r['accuracy'] - dense) * 100:+.2f}", epochs,
                         f"{r['seconds']:.0f}"])
        if best:
            rows.append([name, "deepshrink AGP global, highest within 0.5 pp", f"{best['sparsity'] * 100:.2f}%",
                         f"{dense * 100:.2f}%", f"{best['accuracy'] * 100:.2f}%",
                         f"{(best['accuracy'] - dense) * 100:+.2f}", epochs, f"{best['seconds']:.0f}"])
        print(f"{name}: dense {dense * 100:.2f}%  ours@92 {o92['accuracy'] * 100:.2f}%  "
              f"peer@92 {p92['accuracy'] * 100:.2f}%  best {best and best['sparsity']}", flush=True)
    scan = scan_time(ds)
    print(f"LeNet-5 sensitivity scan: {scan['seconds']:.1f} s", flush=True)
    write_result("prune_fine", {
        "title": "Fine-grained pruning: LeNet-300-100 and LeNet-5 on Fashion-MNIST",
        "command": "python benchmarks/prune_fine.py",
        "threads": args.threads, "models": results, "sensitivity_scan_lenet5": scan,
        "table": {"columns": ["model", "method", "sparsity", "dense acc", "pruned acc", "drop (pp)",
                              "fine-tune epochs", "seconds"], "rows": rows},
        "notes": [f"LeNet-5 sensitivity scan, 4 layers x 6 sparsities on the 10,000 test images: "
                  f"{scan['seconds']:.1f} s ({args.threads} thread).",
                  "Same fine-tuning for both methods: epochs, LR and weight decay of the model's own training "
                  "recipe, seed 0, identical batch order; accuracy on the 10,000 test images.",
                  f"Ladder of targets for ours: {', '.join(map(str, LADDER))}; it stops at the first target "
                  "that loses more than 0.5 pp."],
    })


if __name__ == "__main__":
    main()
