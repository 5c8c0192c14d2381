"""Quantization on Fashion-MNIST: LeNet-5, VGG-style and ResNet-20-style baselines.

    python benchmarks/quantize.py [--models lenet5 vgg resnet20] [--skip-qat] [--skip-kmeans]
                                  [--skip-speed] [--threads 1] [--qat-epochs 1] [--calib 512]

Per model, in one process, same model and the same calibration images (the first --calib
training images) for every contestant:
* accuracy (full test set) of fp32 PyTorch, ONNX Runtime fp32, our int8 PTQ (fake-quantized
  model, and its QDQ export run by ONNX Runtime), torch.ao x86 int8 (FX graph mode, the
  deprecated peer), ONNX Runtime's own ``quantize_static`` (QDQ, per channel, after its
  pre-processing); our integer-only engine on the first --engine-images test images
  (agreement with the fake-quantized model and with ONNX Runtime, in output codes);
* throughput (images/s) at batch 1 and 256: every contestant timed in interleaved rounds,
  median over rounds, --threads intra-op threads for all (the machine is shared);
* 4-bit weights (8-bit activations) with QAT (STE, per-channel, --qat-epochs epochs);
* k-means sharing, 8-bit conv / 5-bit fc (Deep Compression's setting), before and after one
  epoch of centroid fine-tuning.
Results of models not run are kept from the previous results file.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from _results import command, load_baseline, previous, write_result

from deepshrink import data as data_mod
from deepshrink.data import Dataset, Split
from deepshrink.quant import (IntegerModel, KMeansConfig, OrtSession, QuantConfig, centroid_finetune,
                              export_onnx, export_qdq, kmeans_quantize_, qat_finetune, quantize_ptq)
from deepshrink.train import TrainConfig, evaluate

TARGETS = {"int8_ptq": 0.3, "qat4": 1.0, "kmeans": 0.2, "peer_gap": 0.1, "speedup": 2.0}


def torch_ao_int8(model, calib):
    """torch.ao FX graph mode, x86 backend (deprecated in this torch: a peer only)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
        with torch.no_grad():
            for lo in range(0, len(calib), 256):
                m(calib[lo:lo + 256])
        return convert_fx(m)


def ort_quantize_static(fp32_path: Path, out: Path, calib) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[lo:lo + 64].numpy()} for lo in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def torch_runner(model):
    def run(x):
        with torch.no_grad():
            return model(x)
    return run


def throughput(runners: dict, x_pool: torch.Tensor, batch: int, rounds: int, min_seconds: float) -> dict:
    """Images/s per contestant: interleaved rounds, each a timed loop of >= min_seconds."""
    xb = x_pool[:batch].contiguous()
    xb_np = xb.numpy()
    inputs = {k: (xb_np if isinstance(r, OrtSession) else xb) for k, r in runners.items()}
    calls = {k: (r.session.run if isinstance(r, OrtSession) else None) for k, r in runners.items()}

    def once(k):
        if calls[k] is not None:
            calls[k](None, {runners[k].input_name: inputs[k]})
        else:
            runners[k](inputs[k])

    for k in runners:  # warm-up
        for _ in range(3):
            once(k)
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k in runners:
            n, t0 = 0, time.perf_counter()
            while True:
                once(k)
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            rates[k].append(n * batch / dt)
    return {k: statistics.median(v) for k, v in rates.items()}


def run_model(name: str, args, ds_cache: dict) -> dict:
    model, info, _ = load_baseline(name)
    key = (tuple(info.mean), tuple(info.std))
    if key not in ds_cache:
        ds_cache[key] = data_mod.load("fashion-mnist", mean=info.mean, std=info.std)
    ds: Dataset = ds_cache[key]
    calib = ds.train.x[:args.calib]
    out: dict = {"model": name, "calib_images": len(calib)}
    t0 = time.perf_counter()
    acc = {"pytorch fp32": evaluate(model, ds.test)}
    gm = quantize_ptq(model, calib, QuantConfig())
    acc["ours int8 (fake-quant)"] = evaluate(gm, ds.test)
    tmp = Path(tempfile.mkdtemp(prefix=f"dsq_{name}_"))
    export_onnx(model, tmp / "fp32.onnx", info.input_shape)
    export_qdq(gm, tmp / "ours.onnx", info.input_shape)
    sess = {"ONNX Runtime fp32": OrtSession(tmp / "fp32.onnx", threads=args.threads),
            "ours int8 (ONNX Runtime)": OrtSession(tmp / "ours.onnx", threads=args.threads)}
    peers = {}
    if not args.skip_peers:
        peers["torch.ao x86 int8"] = torch_ao_int8(model, calib)
        acc["torch.ao x86 int8"] = evaluate(peers["torch.ao x86 int8"], ds.test)
        sess["ORT quantize_static int8"] = OrtSession(ort_quantize_static(tmp / "fp32.onnx", tmp / "ortq.onnx", calib),
                                                      threads=args.threads)
    for k, s in sess.items():
        acc[k] = s.evaluate(ds.test)
    out["accuracy"] = acc
    out["fused_ops_ours"] = dict(sess["ours int8 (ONNX Runtime)"].fused_ops())
    # integer-only engine: agreement in output codes on the first N test images
    n = min(args.engine_images, len(ds.test))
    eng = IntegerModel(gm)
    x = ds.test.x[:n]
    q, g = eng.run_codes(x)
    with torch.no_grad():
        fq_codes = torch.round(gm(x) / g.scale) + g.zero_point
        fq64_codes = torch.round(copy.deepcopy(gm).double()(x.double()) / g.scale) + g.zero_point
    ort_codes = torch.round(torch.from_numpy(sess["ours int8 (ONNX Runtime)"].run(x)) / g.scale) + g.zero_point
    out["engine"] = {
        "images": n,
        "accuracy": (q.argmax(1) == ds.test.y[:n]).float().mean().item(),
        "accuracy_fake_quant_same_images": (fq_codes.argmax(1) == ds.test.y[:n]).float().mean().item(),
        "max_code_diff_vs_fake_quant_fp32": (q - fq_codes).abs().max().item(),
        "max_code_diff_vs_fake_quant_fp64": (q - fq64_codes).abs().max().item(),
        "max_code_diff_vs_ort": (q - ort_codes).abs().max().item(),
        "frac_outputs_differing_vs_ort": ((q - ort_codes) != 0).float().mean().item(),
    }
    out["seconds_ptq_and_peers"] = time.perf_counter() - t0
    if not args.skip_speed:
        runners = {"pytorch fp32": torch_runner(model), **sess,
                   **{k: torch_runner(m) for k, m in peers.items()}}
        out["throughput"] = {str(b): throughput(runners, ds.test.x, b, args.rounds, 0.3 if b == 1 else 1.0)
                             for b in (1, 256)}
    if not args.skip_qat:
        t1 = time.perf_counter()
        tcfg = TrainConfig(epochs=1, lr=args.qat_lr, warmup_epochs=0.0, eval_every=0, seed=0, progress=False,
                           verbose=False, augment=bool(info.train_config().get("augment", True)))
        train = _fraction(ds, args.qat_epochs)
        qat, _ = qat_finetune(model, train, calib, QuantConfig(weight_bits=4), tcfg)
        acc["ours 4-bit weights, PTQ only"] = evaluate(quantize_ptq(model, calib, QuantConfig(weight_bits=4)), ds.test)
        acc["ours 4-bit weights + QAT"] = evaluate(qat, ds.test)
        out["qat"] = {"epochs": args.qat_epochs, "lr": args.qat_lr, "seconds": time.perf_counter() - t1}
    if not args.skip_kmeans:
        t1 = time.perf_counter()
        km = copy.deepcopy(model)
        bits = kmeans_quantize_(km, KMeansConfig(conv_bits=8, fc_bits=5))
        acc["k-means 8-bit conv / 5-bit fc"] = evaluate(km, ds.test)
        r = centroid_finetune(km, ds, TrainConfig(epochs=1, lr=1e-4, optimizer="adam", weight_decay=0.0,
                                                   warmup_epochs=0.0, eval_every=0, seed=0, progress=False,
                                                   verbose=False))
        acc["k-means + centroid fine-tuning"] = r.accuracy
        out["kmeans"] = {"bits": bits, "seconds": time.perf_counter() - t1}
    return out


def _fraction(ds: Dataset, epochs: float) -> Dataset:
    if epochs >= 1:
        return ds
    n = int(len(ds.train) * epochs)
    return Dataset(ds.name, Split(ds.train.x[:n], ds.train.y[:n]), ds.test, ds.mean, ds.std, ds.num_classes)


def table(results: dict) -> tuple[list, list, list]:
    cols = ["model", "contestant", "accuracy %", "drop pp", "img/s b1", "img/s b256", "x fp32 b256"]
    rows, checks = [], []
    for name, r in results.items():
        base = r["accuracy"]["pytorch fp32"]
        thr = r.get("throughput", {})
        fp32_256 = thr.get("256", {}).get("pytorch fp32")
        for k, a in r["accuracy"].items():
            t1, t256 = thr.get("1", {}).get(k), thr.get("256", {}).get(k)
            rows.append([name, k, round(a * 100, 2), round((base - a) * 100, 2) + 0.0,  # no "-0"
                         round(t1) if t1 else "-", round(t256) if t256 else "-",
                         round(t256 / fp32_256, 2) if t256 and fp32_256 else "-"])
        a = r["accuracy"]
        drop = lambda k: (base - a[k]) * 100 if k in a else None  # noqa: E731
        checks.append(f"{name}: int8 PTQ drop {drop('ours int8 (ONNX Runtime)'):.2f} pp (target <= 0.3)")
        if "ours 4-bit weights + QAT" in a:
            checks.append(f"{name}: 4-bit QAT drop {drop('ours 4-bit weights + QAT'):.2f} pp (target <= 1.0)")
        if "k-means + centroid fine-tuning" in a:
            checks.append(f"{name}: k-means 8/5 after fine-tuning drop "
                          f"{drop('k-means + centroid fine-tuning'):.2f} pp (target <= 0.2)")
        peer = [a[k] for k in ("torch.ao x86 int8", "ORT quantize_static int8") if k in a]
        if peer:
            checks.append(f"{name}: ours int8 ORT {a['ours int8 (ONNX Runtime)'] * 100:.2f}% vs best int8 peer "
                          f"{max(peer) * 100:.2f}% (target: within 0.1 pp)")
        if fp32_256:
            checks.append(f"{name}: ours int8 ORT at batch 256 is "
                          f"{thr['256']['ours int8 (ONNX Runtime)'] / fp32_256:.2f}x PyTorch fp32 (target >= 2 on conv nets)")
        e = r["engine"]
        checks.append(f"{name}: integer engine on {e['images']} images: max output-code difference "
                      f"{e['max_code_diff_vs_fake_quant_fp64']:.0f} vs the fake-quantized model in float64 "
                      f"({e['max_code_diff_vs_fake_quant_fp32']:.0f} in float32), {e['max_code_diff_vs_ort']:.0f} vs "
                      f"ONNX Runtime ({e['frac_outputs_differing_vs_ort'] * 100:.2f}% of outputs differ)")
    return cols, rows, checks


def payload(args, results: dict, cols: list, rows: list, checks: list[str]) -> dict:
    return {
        "title": "Quantization: int8 PTQ, 4-bit QAT, k-means; ours vs torch.ao and ONNX Runtime",
        "command": command("quantize", ["--models", *args.models]),
        "table": {"columns": cols, "rows": rows},
        "notes": [f"{args.threads} intra-op thread(s) for every contestant; throughput is the median of "
                  f"{args.rounds} interleaved rounds on a 2-core machine shared with other jobs",
                  "ours int8: per-channel symmetric int8 weights, asymmetric uint8 activations (percentile "
                  "99.99 observer), BN folded, exported as QDQ and fused by ONNX Runtime",
                  *checks],
        "raw": results,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet5", "vgg", "resnet20"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--engine-images", type=int, default=1000)
    ap.add_argument("--qat-epochs", type=float, default=1.0, help="fraction < 1: that share of one epoch")
    ap.add_argument("--qat-lr", type=float, default=0.005)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--skip-qat", action="store_true")
    ap.add_argument("--skip-kmeans", action="store_true")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results = previous("quantize").get("raw", {})
    cache: dict = {}
    for name in args.models:
        print(f"== {name}", flush=True)
        results[name] = run_model(name, args, cache)
        results[name]["command_args"] = vars(args)
        print(json.dumps(results[name]["accuracy"], indent=1), flush=True)
    cols, rows, checks = table(results)
    write_result("quantize", payload(args, results, cols, rows, checks))
    print("\n".join(checks))


if __name__ == "__main__":
    main()
