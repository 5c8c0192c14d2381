"""AdderNet (issue #9) on Fashion-MNIST: accuracy against the CNN, the gradient-norm table,
and the speed and memory of AdderConv2d against nn.Conv2d.

    python benchmarks/addernet.py [--parts accuracy grads speed] [--epochs 5] [--steps 100]

* accuracy: LeNet-5 (CNN) and lenet5_adder (adaptive rate eta=0.1) trained with the same
  epochs, seed, batch order and batch size, each with its recipe's LR and weight decay
  (deepshrink/models/recipes.py), SGD with Nesterov momentum and a cosine schedule, no
  augmentation; test accuracy on the 10,000 test images.
* grads: the homework's table (seeds 000/001, problem 1): per layer the L2 norm of the weight
  gradient, and the output variance, on one fixed batch of 256 training images, at
  initialisation and after ``--steps`` SGD steps of each model (CNN, adder without and with
  the adaptive rate; same init seed, batches and constant LR). With the adaptive rate the
  optimizer receives eta * sqrt(k) instead of the raw norm; both are shown.
* speed: forward (no grad) and forward + backward (input and weight gradients) time of
  AdderConv2d and nn.Conv2d on the same shapes, medians of interleaved repeats in this
  process; peak memory of one forward + backward, each in a fresh subprocess after a warm-up
  call, as the rise of the process's peak resident set (VmHWM, reset through
  /proc/self/clear_refs) above its resident size just before the call, with glibc's mmap
  threshold fixed at 64 KiB so freed blocks leave the resident set. The
  "naive" adder materialises the (N, C_out, C_in k k, L) difference tensor with autograd (and
  so has sign gradients): it shows what the chunked layer avoids.

Each part writes its own results file (addernet_accuracy, addernet_grads, addernet_speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from _results import ROOT, command, write_result

from deepshrink import data as data_mod
from deepshrink import models
from deepshrink.data import iterate_batches
from deepshrink.models.recipes import RECIPES
from deepshrink.nn import AdderConv2d, layer_stats
from deepshrink.train import TrainConfig, fit, seed_everything

SHARED = "the machine (2 cores) was shared with other jobs running at the same time"
ETA = 0.1
LAYERS = ["conv1", "conv2", "fc1", "fc2"]


# ----------------------------------------------------------------------------- accuracy

def _build(name: str, **kw) -> nn.Module:
    seed_everything(0)
    return models.build(name, **kw)


def accuracy(ds, epochs: int) -> None:
    rows, raw = [], {}
    for name in ("lenet5", "lenet5_adder"):
        rec = RECIPES[name]
        cfg = TrainConfig(epochs=epochs, lr=rec["lr"], weight_decay=rec["weight_decay"], augment=False, seed=0,
                          progress=False, verbose=True, eval_every=1)
        model = _build(name, **({"eta": ETA} if name == "lenet5_adder" else {}))
        r = fit(model, ds, cfg)
        raw[name] = {"accuracy": r.accuracy, "seconds": r.seconds, "history": r.history,
                     "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        rows.append([name, epochs, cfg.lr, round(r.accuracy * 100, 2), round(r.seconds / epochs, 1)])
    gap = (raw["lenet5"]["accuracy"] - raw["lenet5_adder"]["accuracy"]) * 100
    write_result("addernet_accuracy", {
        "title": "AdderNet: LeNet-5 adder against LeNet-5 CNN (Fashion-MNIST, same epochs)",
        "command": command("addernet", ["--parts accuracy", f"--epochs {epochs}"]),
        "table": {"columns": ["model", "epochs", "lr", "test accuracy %", "s / epoch"], "rows": rows},
        "notes": [f"CNN minus adder: {gap:+.2f} pp (issue target: within 1.0 pp).",
                  f"Same epochs ({epochs}), seed 0, batch 128, batch order, no augmentation, SGD (Nesterov 0.9) "
                  "with a cosine schedule; each model's recipe LR and weight decay; adder: BatchNorm after each "
                  f"adder layer, adaptive rate eta={ETA}.",
                  "Fewer epochs than the CNN recipe's 20 (checkpoints/baselines/lenet5.safetensors, 92.10%): the "
                  "adder layers run without BLAS on the CPU; both models get the same reduced budget.",
                  f"1 torch thread; {SHARED}, so the seconds are indicative only."],
        "raw": raw, "epochs": epochs, "eta": ETA,
    })


# ----------------------------------------------------------------------------- gradient norms

def _train_steps(model: nn.Module, ds, steps: int, lr: float, wd: float) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    model.train()
    for step, (x, y) in enumerate(iterate_batches(ds.train, 128, shuffle=True, seed=0, epoch=0)):
        if step == steps:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _sig(v: float) -> str:
    return f"{v:.3g}"


def grads(ds, steps: int) -> None:
    from deepshrink.train import evaluate
    xb, yb = ds.train.x[:256], ds.train.y[:256]
    configs = [("CNN (lenet5)", "lenet5", {}), ("adder, no adaptive rate", "lenet5_adder", {"eta": None}),
               (f"adder, adaptive rate eta={ETA}", "lenet5_adder", {"eta": ETA})]
    rows, raw = [], {}
    for label, name, kw in configs:
        model = _build(name, **kw)
        rec = RECIPES[name]
        raw[label] = {}
        for at in (0, steps):
            if at:
                _train_steps(model, ds, steps, rec["lr"], rec["weight_decay"])
            stats = layer_stats(model, xb, yb)
            raw[label][f"step {at}"] = [vars(s) for s in stats]
            rows.append([label, at, "weight-gradient L2 norm"] + [_sig(s.grad_norm) for s in stats])
            if kw.get("eta"):
                rows.append([label, at, "update norm (eta sqrt k)"] + [_sig(s.update_norm) for s in stats])
            rows.append([label, at, "output variance"] + [_sig(s.output_var) for s in stats])
            rows.append([label, at, "iid-Gaussian prediction"] + [_sig(s.predicted_var) for s in stats])
        raw[label]["test_accuracy_after_steps"] = evaluate(model, ds.test)
    accs = "; ".join(f"{k}: {v['test_accuracy_after_steps'] * 100:.2f}%" for k, v in raw.items())
    write_result("addernet_grads", {
        "title": "AdderNet: weight-gradient norms and output variance per layer (the homework's table)",
        "command": command("addernet", ["--parts grads", f"--steps {steps}"]),
        "table": {"columns": ["model", "step", "quantity", "layer 1 (conv1)", "layer 2 (conv2)", "layer 3 (fc1)",
                              "layer 4 (fc2, linear in all)"], "rows": rows},
        "notes": ["One fixed batch (the first 256 training images), training mode (BatchNorm on batch statistics), "
                  "cross-entropy; output variance per channel over batch and positions, averaged over channels "
                  "(deepshrink.nn.layer_stats); the prediction is docs/METHODS.md's formula at the measured input "
                  "and weight variances, which assumes independent zero-mean inputs.",
                  f"Step {steps}: after {steps} SGD steps (batch 128, constant recipe LR, Nesterov 0.9, same init "
                  "seed and batches). Test accuracy then: " + accs + ".",
                  "fc2 is an ordinary linear layer in lenet5_adder (the paper keeps the classifier); its norm is "
                  "shown for reference.",
                  f"1 torch thread; {SHARED}."],
        "raw": raw, "steps": steps, "eta": ETA,
    })


# ----------------------------------------------------------------------------- speed and memory

SHAPES = [  # name, N, C_in, C_out, k, stride, padding, H
    ("LeNet-5 conv1", 64, 1, 20, 5, 1, 0, 28),
    ("LeNet-5 conv2", 64, 20, 50, 5, 1, 0, 12),
    ("ResNet-20 stage 2", 64, 32, 32, 3, 1, 1, 14),
]


class NaiveAdder(nn.Module):
    """The whole (N, C_out, K, L) difference tensor at once, with autograd (sign gradients)."""

    def __init__(self, ref: AdderConv2d):
        super().__init__()
        self.ref = ref

    def forward(self, x):
        r = self.ref
        cols = F.unfold(x, r.kernel_size, r.dilation, r.padding, r.stride)                  # (N, K, L)
        w = r.weight.reshape(r.out_channels, -1)                                             # (S, K)
        y = -(cols.unsqueeze(1) - w[None, :, :, None]).abs().sum(2)                          # (N, S, L)
        ho = (x.shape[2] + 2 * r.padding[0] - r.kernel_size[0]) // r.stride[0] + 1
        return y.view(x.shape[0], r.out_channels, ho, -1)


def _layer(impl: str, shape):
    _, n, cin, cout, k, s, p, h = shape
    torch.manual_seed(0)
    if impl == "conv":
        return nn.Conv2d(cin, cout, k, s, p, bias=False)
    adder = AdderConv2d(cin, cout, k, s, p, bias=False)
    return NaiveAdder(adder) if impl == "naive adder" else adder


def _input(shape, grad=True):
    _, n, cin, _, _, _, _, h = shape
    torch.manual_seed(1)
    return torch.randn(n, cin, h, h, requires_grad=grad)


def _fwd(layer, x):
    with torch.no_grad():
        layer(x)


def _fwd_bwd(layer, x):
    layer(x).sum().backward()


def speed(repeats: int) -> None:
    rows, raw = [], []
    for shape in SHAPES:
        times = {(impl, mode): [] for impl in ("conv", "adder") for mode in ("fwd", "fwd+bwd")}
        layers = {impl: _layer(impl, shape) for impl in ("conv", "adder")}
        x = _input(shape)
        for impl in layers:  # warm-up
            _fwd_bwd(layers[impl], x)
        for _ in range(repeats):   # interleaved: conv, adder, conv, adder, ...
            for (impl, mode), ts in times.items():
                fn = _fwd if mode == "fwd" else _fwd_bwd
                t0 = time.perf_counter()
                fn(layers[impl], x)
                ts.append(time.perf_counter() - t0)
        med = {key: statistics.median(ts) for key, ts in times.items()}
        mem = {impl: _peak_memory(impl, SHAPES.index(shape)) for impl in ("conv", "adder", "naive adder")}
        rows.append([shape[0], f"{shape[1]}x{shape[2]}x{shape[7]}x{shape[7]} -> {shape[3]}, k{shape[4]}",
                     round(med[("conv", "fwd")] * 1e3, 2), round(med[("adder", "fwd")] * 1e3, 2),
                     round(med[("adder", "fwd")] / med[("conv", "fwd")], 1),
                     round(med[("conv", "fwd+bwd")] * 1e3, 2), round(med[("adder", "fwd+bwd")] * 1e3, 2),
                     round(med[("adder", "fwd+bwd")] / med[("conv", "fwd+bwd")], 1),
                     mem["conv"], mem["adder"], mem["naive adder"]])
        raw.append({"shape": shape, "median_s": {f"{i} {m}": v for (i, m), v in med.items()},
                    "all_s": {f"{i} {m}": v for (i, m), v in times.items()}, "peak_mib": mem})
    write_result("addernet_speed", {
        "title": "AdderNet: AdderConv2d against nn.Conv2d, time and peak memory (same shapes)",
        "command": command("addernet", ["--parts speed", f"--repeats {repeats}"]),
        "table": {"columns": ["layer", "input -> C_out", "conv fwd ms", "adder fwd ms", "adder/conv fwd",
                              "conv fwd+bwd ms", "adder fwd+bwd ms", "adder/conv fwd+bwd", "conv peak MiB",
                              "adder peak MiB", "naive adder peak MiB"], "rows": rows},
        "notes": [f"Medians of {repeats} interleaved repeats after a warm-up, 1 torch thread, float32, NCHW; "
                  "fwd+bwd computes the input and weight gradients. nn.Conv2d uses PyTorch's optimised CPU "
                  "kernels; the adder layer has no BLAS form (chunked |x - w| in 1 MiB blocks).",
                  "Peak MiB: the second forward + backward at the shape in a fresh subprocess (the first one "
                  "warms up), the rise of the peak resident set (VmHWM, reset through /proc/self/clear_refs) above "
                  "the resident size just before the call, MALLOC_MMAP_THRESHOLD_=65536 so freed blocks leave the "
                  "resident set, least of 3 subprocesses; it includes the output, saved tensors, gradients and "
                  "allocator slack (it is not torch's allocator count).",
                  "Naive adder: the (N, C_out, C_in k k, L) tensor materialised with autograd, for reference only "
                  "(its gradients are the sign gradients, not AdderNet's).",
                  f"{SHARED}; ratios were measured interleaved in the same process."],
        "raw": raw, "repeats": repeats,
    })


def _peak_memory(impl: str, index: int, tries: int = 3) -> float:
    """Least of ``tries`` fresh subprocesses: under memory pressure the kernel may drop a
    library's pages before the call and fault them back in during it, which only adds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    peaks = []
    for _ in range(tries):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", impl, str(index)],
                             env=env, capture_output=True, text=True, cwd=ROOT, check=True)
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
    return min(peaks)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(impl: str, index: int) -> None:
    shape = SHAPES[index]
    layer = _layer(impl, shape)
    x = _input(shape)
    _fwd_bwd(layer, x)                       # warm-up at this shape: kernels chosen, code paged in
    layer.zero_grad(set_to_none=True)
    x.grad = None
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                        # reset the peak resident set (VmHWM) to the current size
    before = _status_kib("VmRSS")
    _fwd_bwd(layer, x)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": round(max(0, peak - before) / 1024, 1)}))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", default=["accuracy", "grads", "speed"],
                    choices=["accuracy", "grads", "speed"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if "speed" in args.parts:
        speed(args.repeats)
    if {"accuracy", "grads"} & set(args.parts):
        ds = data_mod.load("fashion-mnist")
        if "grads" in args.parts:
            grads(ds, args.steps)
        if "accuracy" in args.parts:
            accuracy(ds, args.epochs)


if __name__ == "__main__":
    main()
