"""Structured (channel) pruning on Fashion-MNIST: ResNet-20 and VGG, ours against Torch-Pruning.

    python benchmarks/prune_channels.py [--models resnet20 vgg] [--epochs 3] [--threads 1]
                                        [--macs-target 0.5] [--criterion l1] [--lr 0.01] [--round-to 8]

Ours: ``prune_channels(macs_target=0.5, criterion="l1")`` finds the smallest uniform ratio
that halves the MACs (bisection, MACs from the profiler), removes those channels, then
fine-tunes ``--epochs`` through deepshrink.train.fit. Peer: Torch-Pruning's MetaPruner with
``MagnitudeImportance(p=1)`` at the same uniform ratio (the final classifier ignored, as ours
freezes the model's output), then the same fine-tuning (epochs, LR, weight decay, batch order,
seed). Time to prune is measured at that fixed ratio for both (our ratio search is reported
apart). Latency: ``compare_latency`` (interleaved A B A B, median of per-pair ratios) at batch
1 and batch 256 on ``--threads`` CPU threads, dense against ours and ours against the peer, in
PyTorch eager (NCHW and channels_last) and in ONNX Runtime (our fp32 export).
``--round-to k`` keeps our channel counts multiples of k (runs stored under their own key).
Measured here (AVX-512, 16 fp32 lanes): convolutions whose channel counts are not multiples of
16 fall off oneDNN's and ONNX Runtime's blocked kernels; VGG pruned to 24/40/88 channels
(round_to 8) ran its 24-channel 28x28 convolution no faster than the dense 32-channel one, and
in ONNX Runtime the pruned ResNet-20 (8/24/48) was no faster than dense at batch 256;
``--peer-match channels`` gives Torch-Pruning per-layer ratios that keep exactly our channel
counts (its own ``round_to`` rounds differently and prunes far more at the same ratio). Models not run keep their results
from the previous results file.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _results import command_from_args, load_baseline, merge_commands, previous, write_result

from deepshrink import data as data_mod
from deepshrink.profile import compare_latency, profile_model
from deepshrink.prune import prune_channels
from deepshrink.prune.graph import build_groups
from deepshrink.quant.export import export_onnx
from deepshrink.quant.fold import fold_batchnorm
from deepshrink.quant.session import OrtSession
from deepshrink.train import TrainConfig, evaluate, fit

NAME = "prune_channels"


def counts(model: nn.Module) -> tuple[int, int]:
    t = profile_model(model, torch.zeros(1, 1, 28, 28)).totals
    return int(t["macs"]), int(t["params"])


def finetune(model: nn.Module, ds, trained: dict, args) -> float:
    if args.epochs == 0:
        return evaluate(model, ds.test)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=trained.get("weight_decay", 5e-4),
                      augment=trained.get("augment", True), label_smoothing=trained.get("label_smoothing", 0.0),
                      seed=0, progress=False, verbose=True, eval_every=0)
    return fit(model, ds, cfg).accuracy


def ours(name: str, ds, args) -> tuple[dict, nn.Module]:
    model, _, trained = load_baseline(name)
    x = torch.randn(1, 1, 28, 28)
    searched = prune_channels(model, x, macs_target=args.macs_target, criterion=args.criterion,
                              round_to=args.round_to)
    t0 = time.perf_counter()  # in place and without MAC counting, like the peer's pruner.step()
    r = prune_channels(model, x, ratio=searched.ratio, criterion=args.criterion, round_to=args.round_to,
                       inplace=True, measure=False)
    seconds = time.perf_counter() - t0
    macs, params = counts(model)
    pruned_acc = evaluate(model, ds.test)
    acc = finetune(model, ds, trained, args)
    return {"ratio": r.ratio, "macs": macs, "params": params, "accuracy_pruned": pruned_acc,
            "accuracy": acc, "prune_seconds": seconds, "search_seconds": searched.seconds,
            "channels": r.channels, "frozen": r.frozen}, model


def matched_ratios(model: nn.Module, x, channels: dict) -> dict:
    """Per-layer ratios making Torch-Pruning keep our channel counts (it keeps int(C (1 - r)))."""
    ratios = {}
    for g in build_groups(model, x):
        if g.name in channels:
            before, after = channels[g.name]
            for m in g.members:
                if m.dim == "out" and isinstance(g.modules[m.module], (nn.Conv2d, nn.Linear)):
                    ratios[g.modules[m.module]] = 1.0 - (after + 0.5) / before
    return ratios


def peer(name: str, ds, ratio: float, args, channels: dict) -> tuple[dict, nn.Module]:
    import torch_pruning as tp  # a peer for the benchmark, not a dependency of the package

    model, _, trained = load_baseline(name)
    x = torch.randn(1, 1, 28, 28)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    per_layer = matched_ratios(model, x, channels) if args.peer_match == "channels" else None
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio if per_layer is None else 0.0,
                                  pruning_ratio_dict=per_layer, ignored_layers=[last])
    pruner.step()
    seconds = time.perf_counter() - t0
    macs, params = counts(model)
    pruned_acc = evaluate(model, ds.test)
    acc = finetune(model, ds, trained, args)
    return {"ratio": ratio, "macs": macs, "params": params, "accuracy_pruned": pruned_acc, "accuracy": acc,
            "prune_seconds": seconds}, model


RUNTIMES = ("pytorch", "pytorch channels_last", "onnxruntime")
# runner() also knows these two, timed by prune_channels_latency.py
EXTRA_RUNTIMES = ("pytorch bn-folded", "torchscript frozen")


def runner(model: nn.Module, runtime: str, threads: int, tmp: Path):
    """(callable, input converter) running ``model`` in ``runtime``.

    "pytorch bn-folded": the fx graph with every conv -> BatchNorm folded (fewer ops per layer);
    "torchscript frozen": that graph traced and frozen (no Python between ops). The weights do not
    change what is timed, only the shapes do."""
    if runtime == "onnxruntime":
        path = tmp / f"m{len(list(tmp.iterdir()))}.onnx"
        export_onnx(model, path, (1, 28, 28))  # ONNX Runtime folds BatchNorm and fuses Conv+ReLU itself
        session = OrtSession(path, threads=threads, batch_size=256)
        return session.run, lambda x: x.numpy()
    if runtime in EXTRA_RUNTIMES:
        folded = fold_batchnorm(model).eval()  # a traced copy; the model is untouched
        if runtime == "pytorch bn-folded":
            return folded, lambda x: x
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(folded, torch.zeros(1, 1, 28, 28))), lambda x: x
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}")
    fmt = torch.channels_last if runtime.endswith("channels_last") else torch.contiguous_format
    m = copy.deepcopy(model).to(memory_format=fmt).eval()
    return m, lambda x: x.contiguous(memory_format=fmt)


def latency(a: nn.Module, b: nn.Module, args, runtimes=RUNTIMES) -> dict:
    """{runtime: {"b1": ..., "b256": ...}}: a against b, interleaved, in each runtime."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in runtimes:
            fa, convert = runner(a, runtime, args.threads, Path(tmp))
            fb, _ = runner(b, runtime, args.threads, Path(tmp))
            for batch, repeats in ((1, args.repeats_b1), (256, args.repeats_b256)):
                x = convert(torch.randn(batch, 1, 28, 28))
                c = compare_latency(fa, fb, x, warmup=3, repeats=repeats, threads=args.threads)
                out.setdefault(runtime, {})[f"b{batch}"] = {
                    "ratio": c.ratio_median, "p10": c.ratio_p10, "p90": c.ratio_p90,
                    "a_ms": c.a.median_ms, "b_ms": c.b.median_ms, "repeats": repeats}
    return out


def rerun_latency(name: str, key: str, entry: dict, args) -> dict:
    """Latency again, dense vs ours, in every runtime, for the stored results ``entry``. The
    weights are pruned but not fine-tuned (fine-tuned models are not kept); the shapes, hence the
    work, equal the fine-tuned model's, which is checked through the MAC count."""
    model, _, _ = load_baseline(name)
    x = torch.zeros(1, 1, 28, 28)
    r = prune_channels(model, x, ratio=entry["ours"]["ratio"], criterion=entry["criterion"],
                       round_to=entry.get("round_to", 1))
    if r.macs_after != entry["ours"]["macs"]:
        raise SystemExit(f"{name}: re-pruned model has {r.macs_after} MACs, the stored one {entry['ours']['macs']}")
    model.eval()
    rerun = {"weights": "pruned, not fine-tuned (same shapes)", "threads": args.threads,
             "dense_vs_ours": latency(model, r.model.eval(), args), "command": command_from_args(NAME, args)}
    _print_speed(key, rerun["dense_vs_ours"], entry["ours"]["macs"], entry["dense"]["macs"], "vs dense (re-run)")
    return rerun


def _print_speed(name: str, lat: dict, macs: int, macs0: int, what: str, share: bool = True) -> None:
    red = macs0 / macs
    for runtime, by_batch in lat.items():
        cells = [f"b{b[1:]} {v['ratio']:.2f}x" + (f" ({v['ratio'] / red:.2f} of {red:.2f}x)" if share else "")
                 for b, v in by_batch.items()]
        print(f"{name} {what} in {runtime}: " + "  ".join(cells), flush=True)


def run_model(name: str, ds, args) -> dict:
    dense_model, _, _ = load_baseline(name)
    dense_acc = evaluate(dense_model, ds.test)
    macs0, params0 = counts(dense_model)
    o, o_model = ours(name, ds, args)
    print(f"{name} ours: ratio {o['ratio']:.3f}  MACs {o['macs'] / macs0:.3f}  "
          f"acc {dense_acc * 100:.2f}% -> {o['accuracy_pruned'] * 100:.2f}% -> {o['accuracy'] * 100:.2f}%", flush=True)
    p, p_model = peer(name, ds, o["ratio"], args, o["channels"])
    print(f"{name} torch-pruning: MACs {p['macs'] / macs0:.3f}  "
          f"acc {p['accuracy_pruned'] * 100:.2f}% -> {p['accuracy'] * 100:.2f}%", flush=True)
    for m in (dense_model, o_model, p_model):  # one memory layout for all (fit leaves channels_last)
        m.to(memory_format=torch.contiguous_format).eval()
    lat_dense = latency(dense_model, o_model, args)
    lat_peer = latency(p_model, o_model, args)
    _print_speed(name, lat_dense, o["macs"], macs0, "vs dense")
    _print_speed(name, lat_peer, o["macs"], macs0, "vs torch-pruning", share=False)
    return {"dense": {"accuracy": dense_acc, "macs": macs0, "params": params0}, "ours": o, "torch_pruning": p,
            "latency_dense_vs_ours": lat_dense, "latency_peer_vs_ours": lat_peer, "epochs": args.epochs,
            "lr": args.lr, "criterion": args.criterion, "macs_target": args.macs_target, "threads": args.threads,
            "round_to": args.round_to, "peer_match": args.peer_match, "command": command_from_args(NAME, args)}


def _speed_cells(r: dict, peer: bool, rerun: bool = False) -> list[str]:
    """Per runtime 'b1 / b256' speedup over dense (ours: with the share of the MAC reduction),
    from the run itself or (``rerun``) from the --latency-only re-run."""
    red = r["dense"]["macs"] / r["ours"]["macs"]
    dense_ours = r["latency_rerun"]["dense_vs_ours"] if rerun else r["latency_dense_vs_ours"]
    cells = []
    for runtime in RUNTIMES:
        ld, lp = dense_ours.get(runtime), r["latency_peer_vs_ours"].get(runtime)
        if ld is None:
            cells.append("-")
        elif not peer:
            s1, s256 = ld["b1"]["ratio"], ld["b256"]["ratio"]
            cells.append(f"{s1:.2f}x / {s256:.2f}x ({s1 / red:.2f} / {s256 / red:.2f})")
        elif lp is None:
            cells.append("-")
        else:  # the peer's speed relative to dense = (dense/ours) / (peer/ours), from the same run
            cells.append(f"{ld['b1']['ratio'] / lp['b1']['ratio']:.2f}x / {ld['b256']['ratio'] / lp['b256']['ratio']:.2f}x")
    return cells


def table(results: dict) -> list[list]:
    rows = []
    for name, r in results.items():
        name = f"{name}, {r['epochs']} ep"
        d = r["dense"]
        red = d["macs"] / r["ours"]["macs"]
        rows.append([name, "dense", "-", f"{d['macs'] / 1e6:.2f}", f"{d['params']:,}", "-",
                     f"{d['accuracy'] * 100:.2f}%", "-", "-", f"{red:.2f}x", "-", "-", "-", "-"])
        for label, m, peer in (("deepshrink", r["ours"], False), ("Torch-Pruning", r["torch_pruning"], True)):
            rows.append([name, label, f"{m['ratio']:.3f}", f"{m['macs'] / 1e6:.2f}", f"{m['params']:,}",
                         f"{m['accuracy_pruned'] * 100:.2f}%", f"{m['accuracy'] * 100:.2f}%",
                         f"{(m['accuracy'] - d['accuracy']) * 100:+.2f}", r["epochs"],
                         f"{d['macs'] / m['macs']:.2f}x", *_speed_cells(r, peer), f"{m['prune_seconds']:.2f}"])
        if "latency_rerun" in r:
            rows.append([name, "deepshrink, latency re-run", "", "", "", "", "", "", "", f"{red:.2f}x",
                         *_speed_cells(r, False, rerun=True), ""])
    return rows


def notes(threads: int) -> list[str]:
    return [
        "One uniform channel ratio, the smallest that halves our MACs (channel counts rounded to multiples "
        "of round_to; Torch-Pruning given per-layer ratios that keep exactly our counts); L1 filter norms "
        "(Torch-Pruning's MagnitudeImportance(p=1) also adds the BatchNorm and next-layer input norms).",
        "Fine-tuning: same epochs, LR (cosine), weight decay, augmentation, batch order and seed for both.",
        f"Latency on {threads} CPU thread(s), interleaved A/B, median of per-pair ratios, in three "
        "runtimes: PyTorch eager in NCHW and in channels_last memory format, and ONNX Runtime (our fp32 "
        "ONNX export; ORT folds BatchNorm and fuses Conv+ReLU). Share = speedup / MAC reduction. The machine "
        "ran other jobs on its second core, so absolute times are noisy; ratios are interleaved.",
        "Targets (issue): <= 0.5 pp accuracy drop after fine-tuning; speedup >= 0.85 x the MAC reduction.",
        "Latency re-run rows (--latency-only): dense vs ours timed again later, in all three runtimes, on "
        "pruned but not fine-tuned weights of the same shapes; the peer's speed is derived from the first "
        "run's timings (dense/ours over peer/ours), so compare it with the deepshrink row above it.",
    ]


def payload(args, results: dict) -> dict:
    """The results file: every run's command, the table, the notes and the raw results."""
    commands = merge_commands([r.get("command", "?") for r in results.values()],
                              [r["latency_rerun"]["command"] for r in results.values() if "latency_rerun" in r])
    return {
        "title": "Structured pruning: MACs halved, fine-tuned, against Torch-Pruning (Fashion-MNIST)",
        "command": " ; ".join(commands),
        "table": {"columns": ["model", "method", "ratio", "MMACs", "params", "acc pruned", "acc tuned",
                              "drop pp", "FT epochs", "MAC reduction",
                              "PyTorch NCHW: speedup b1 / b256 (share of MAC reduction)",
                              "PyTorch channels_last", "ONNX Runtime", "prune s"],
                  "rows": table(results)},
        "notes": notes(args.threads),
        "models": results,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet20", "vgg"])
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (same for both)")
    ap.add_argument("--lr", type=float, default=0.01, help="fine-tuning LR (cosine), same for both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and latency")
    ap.add_argument("--macs-target", type=float, default=0.5)
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--round-to", type=int, default=1,
                    help="our channel counts a multiple of this (results keyed 'model, round_to k')")
    ap.add_argument("--peer-match", choices=["ratio", "channels"], default="ratio",
                    help="give Torch-Pruning our uniform ratio, or per-layer ratios that keep our channel counts")
    ap.add_argument("--repeats-b1", type=int, default=100)
    ap.add_argument("--repeats-b256", type=int, default=20)
    ap.add_argument("--latency-only", action="store_true",
                    help="only re-measure latency, dense vs ours, for stored results")
    ap.add_argument("--tables-only", action="store_true", help="no runs: rebuild table and notes from the results")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = data_mod.load("fashion-mnist")
    results = dict(previous(NAME).get("models", {}))
    for name in [] if args.tables_only else args.models:
        key = name if args.round_to == 1 else f"{name}, round_to {args.round_to}"
        if args.latency_only:
            results[key]["latency_rerun"] = rerun_latency(name, key, results[key], args)
        else:
            results[key] = run_model(name, ds, args)
    write_result(NAME, payload(args, results), rebuilt=args.tables_only)


if __name__ == "__main__":
    main()
