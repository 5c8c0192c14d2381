"""``deepshrink export``: a model file to ONNX, fp32 or int8 (QDQ, or ONNX Runtime's dynamic int8),
the input it expects recorded in the file and printed."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.export import ExportConfig, export_file, metadata_summary
from .common import add_model_file_args, add_out_arg, check_output_path, model_file_options

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX: fp32, or int8 QDQ for ONNX Runtime",
                       description="Write a model file as ONNX. The file's metadata_props describe its input "
                                   "(layout, shape, normalisation mean/std and value range, or token ids, sequence "
                                   "length and pad id), the source model and the deepshrink version; the command "
                                   "prints them in one line.")
    p.add_argument("file", help="the model file (.safetensors, .dsz, .pt) or hf:DIR")
    add_out_arg(p, "the ONNX file to write", aliases=("--onnx",), dest="onnx")  # --onnx: its old name
    p.add_argument("--int8", action="store_true",
                   help="int8 QDQ graph (a float file is quantized first, per channel, from --calib images)")
    p.add_argument("--ort-int8", dest="ort_int8", action="store_true",
                   help="ONNX Runtime's dynamic int8 of the fp32 graph (onnxruntime quantize_dynamic: int8 weights, "
                        "activations quantized per call; no calibration); image and text (hf:) models")
    p.add_argument("--bake-preprocessing", dest="bake_preprocessing", action="store_true",
                   help="put the normalisation (x - mean) / std in the graph as its first nodes, so it takes raw "
                        "images in [0, 1] (8-bit pixels / 255) instead of normalised ones; the metadata says "
                        "which it expects (image models)")
    p.add_argument("--calib", type=int, default=ExportConfig.calib,
                   help="calibration images for --int8 (default: %(default)s)")
    p.add_argument("--check", type=int, default=ExportConfig.check, metavar="N",
                   help="run N test images through ONNX Runtime and print the accuracy (default: %(default)s, none)")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_model_file_args(p)
    p.set_defaults(func=cmd_export, int8=ExportConfig.int8, ort_int8=ExportConfig.ort_int8,
                   bake_preprocessing=ExportConfig.bake_preprocessing)


def cmd_export(args) -> int:
    check_output_path(args.onnx, "--out")  # --onnx is only --out's hidden old name
    if args.int8 and args.calib < 1:
        raise ConfigError(f"--calib must be >= 1, got {args.calib}")
    cfg = ExportConfig(int8=args.int8, calib=args.calib, check=args.check, ort_int8=args.ort_int8,
                       bake_preprocessing=args.bake_preprocessing)
    run = export_file(args.file, args.onnx, cfg, data=args.data, **model_file_options(args))
    print(f"{run.kind} -> {args.onnx}")
    print(metadata_summary(run.metadata))
    if run.accuracy is not None:
        print(f"ONNX Runtime accuracy on {run.checked} test images: {run.accuracy * 100:.2f}%")
    return 0
