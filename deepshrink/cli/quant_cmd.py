"""``quantize`` (linear PTQ/QAT or k-means weight sharing) and ``export`` (ONNX fp32 / int8 QDQ)."""

from __future__ import annotations

from dataclasses import asdict

import torch

from ..data import Dataset, Split
from ..errors import ConfigError
from ..io import save_model
from ..train import TrainConfig, evaluate
from .common import NON_NEGATIVE, POSITIVE, add_model_file_args, check_output_path, load_data_for, open_model

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("quantize", help="linear int2-8 quantization (PTQ, optional QAT) or k-means sharing")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--bits", type=int, default=8, help="weight bits (k-means: conv layers)")
    p.add_argument("--fc-bits", type=int, help="bits of the linear layers (default: --bits; k-means paper: 5)")
    p.add_argument("--act-bits", type=int, default=8, help="activation bits (linear method)")
    p.add_argument("--method", choices=["linear", "kmeans"], default="linear")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--observer", choices=["minmax", "moving_average", "percentile", "mse"], default="percentile",
                   help="activation range observer (linear)")
    p.add_argument("--weight-observer", choices=["minmax", "mse"], default="minmax")
    p.add_argument("--calib", type=int, default=512, help="calibration images from the training split")
    p.add_argument("--qat-epochs", action=NON_NEGATIVE, default=0,
                   help="quantization-aware training epochs (linear; k-means: centroid fine-tuning)")
    p.add_argument("--lsq", action="store_true", help="QAT with learnt step sizes (LSQ)")
    p.add_argument("--lr", action=POSITIVE, help="QAT / fine-tuning learning rate")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_model_file_args(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="export to ONNX: fp32, or int8 QDQ for ONNX Runtime")
    p.add_argument("file")
    p.add_argument("--onnx", required=True, metavar="OUT")
    p.add_argument("--int8", action="store_true",
                   help="int8 QDQ graph (a float file is quantized first, per channel, from --calib images)")
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="run N test images through ONNX Runtime and print the accuracy")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_model_file_args(p)
    p.set_defaults(func=cmd_export)


def _calib(ds: Dataset, n: int) -> torch.Tensor:
    if n < 1:
        raise ConfigError(f"--calib must be >= 1, got {n}")
    return ds.train.x[:min(n, len(ds.train))]


def _subset(ds: Dataset, epochs: float) -> tuple[Dataset, int]:
    """Fractional epochs train one epoch on the first fraction of the training split."""
    if epochs <= 0:
        raise ConfigError(f"--qat-epochs must be > 0, got {epochs}")
    if epochs >= 1:
        return ds, int(round(epochs))
    n = max(1, int(len(ds.train) * epochs))
    return Dataset(ds.name, Split(ds.train.x[:n], ds.train.y[:n]), ds.test, ds.mean, ds.std, ds.num_classes), 1


def cmd_quantize(args) -> int:
    check_output_path(args.out)
    from ..quant import QuantConfig, qat_finetune, quantize_ptq, save_quantized
    model, info = open_model(args, args.file)
    ds = load_data_for(info, args.data, args, args.file)
    before = evaluate(model, ds.test)
    fc_bits = args.fc_bits if args.fc_bits is not None else args.bits
    if args.method == "kmeans":
        return _kmeans(args, model, info, ds, before, fc_bits)
    layer_bits = {n: fc_bits for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    cfg = QuantConfig(weight_bits=args.bits, act_bits=args.act_bits, per_channel=args.per_channel,
                      weight_observer=args.weight_observer, act_observer=args.observer,
                      layer_bits={k: v for k, v in layer_bits.items() if v != args.bits})
    calib = _calib(ds, args.calib)
    record: dict = {"op": "quantize", "method": "linear", "config": cfg.to_dict(), "calib": len(calib)}
    if args.qat_epochs:
        data, epochs = _subset(ds, args.qat_epochs)
        tcfg = TrainConfig(epochs=epochs, lr=args.lr or 0.002, warmup_epochs=0.0, eval_every=0, seed=args.seed,
                           augment=bool(info.train_config().get("augment", True)), progress=not args.no_progress)
        gm, _ = qat_finetune(model, data, calib, cfg, tcfg, lsq=args.lsq)
        record.update(qat={"epochs": args.qat_epochs, "lsq": args.lsq, "train": asdict(tcfg)})
    else:
        gm = quantize_ptq(model, calib, cfg)
    after = evaluate(gm, ds.test)
    record.update(accuracy_before=before, accuracy_after=after)
    save_quantized(gm, args.out, info, cfg, accuracy=after, history=record)
    print(f"linear {args.bits}-bit weights ({'per-channel' if args.per_channel else 'per-tensor'}), "
          f"{args.act_bits}-bit activations ({args.observer}, {len(calib)} calibration images)"
          + (f", QAT {args.qat_epochs} epochs{' (LSQ)' if args.lsq else ''}" if args.qat_epochs else ""))
    print(f"accuracy {before * 100:.2f}% -> {after * 100:.2f}%  ({(after - before) * 100:+.2f} pp)  -> {args.out}")
    return 0


def _kmeans(args, model, info, ds, before, fc_bits) -> int:
    from ..quant import KMeansConfig, centroid_finetune, kmeans_quantize_
    cfg = KMeansConfig(conv_bits=args.bits, fc_bits=fc_bits)
    bits = kmeans_quantize_(model, cfg)
    mid = evaluate(model, ds.test)
    record: dict = {"op": "quantize", "method": "kmeans", "config": asdict(cfg), "bits": bits}
    after = mid
    if args.qat_epochs:
        data, epochs = _subset(ds, args.qat_epochs)
        tcfg = TrainConfig(epochs=epochs, lr=args.lr or 1e-4, optimizer="adam", weight_decay=0.0,
                           warmup_epochs=0.0, eval_every=0, seed=args.seed, progress=not args.no_progress)
        after = centroid_finetune(model, data, tcfg).accuracy
        record["finetune"] = asdict(tcfg)
    record.update(accuracy_before=before, accuracy_kmeans=mid, accuracy_after=after)
    info.accuracy = after
    info.history.append(record)
    save_model(model, args.out, info)
    print(f"k-means {args.bits}-bit conv, {fc_bits}-bit fc: accuracy {before * 100:.2f}% -> {mid * 100:.2f}%"
          + (f" -> {after * 100:.2f}% after centroid fine-tuning" if args.qat_epochs else "")
          + f"  -> {args.out}")
    return 0


def cmd_export(args) -> int:
    check_output_path(args.onnx, "--onnx")
    from ..io import read_info
    from ..quant import (OrtSession, QuantConfig, export_onnx, export_qdq, is_quantized_file, load_quantized,
                         quantize_ptq)
    info = read_info(args.file) if args.file.endswith(".safetensors") else None
    if info is not None and is_quantized_file(info):
        gm, info = load_quantized(args.file, trust_code=args.trust_code)
        export_qdq(gm, args.onnx, info.input_shape)
        kind = "int8 QDQ (the file's own grids)"
    else:
        model, info = open_model(args, args.file)
        if args.int8:
            ds = load_data_for(info, args.data, args, args.file)
            gm = quantize_ptq(model, _calib(ds, args.calib), QuantConfig(per_channel=True))
            export_qdq(gm, args.onnx, info.input_shape)
            kind = f"int8 QDQ (calibrated on {min(args.calib, len(ds.train))} images)"
        else:
            export_onnx(model, args.onnx, info.input_shape)
            kind = "fp32"
    print(f"{kind} -> {args.onnx}")
    if args.check:
        ds = load_data_for(info, args.data, args, args.file)
        n = min(args.check, len(ds.test))
        acc = OrtSession(args.onnx).evaluate(Split(ds.test.x[:n], ds.test.y[:n]))
        print(f"ONNX Runtime accuracy on {n} test images: {acc * 100:.2f}%")
    return 0
