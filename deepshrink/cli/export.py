"""``deepshrink export``: a model file to ONNX, fp32 or int8 QDQ for ONNX Runtime."""

from __future__ import annotations

from ..errors import ConfigError
from ..pipelines.export import ExportConfig, export_file
from .common import add_model_file_args, check_output_path, model_file_options

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX: fp32, or int8 QDQ for ONNX Runtime")
    p.add_argument("file")
    p.add_argument("--onnx", required=True, metavar="OUT")
    p.add_argument("--int8", action="store_true",
                   help="int8 QDQ graph (a float file is quantized first, per channel, from --calib images)")
    p.add_argument("--calib", type=int, default=ExportConfig.calib, help="default: %(default)s")
    p.add_argument("--check", type=int, default=ExportConfig.check, metavar="N",
                   help="run N test images through ONNX Runtime and print the accuracy")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    add_model_file_args(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    check_output_path(args.onnx, "--onnx")
    if args.int8 and args.calib < 1:
        raise ConfigError(f"--calib must be >= 1, got {args.calib}")
    cfg = ExportConfig(int8=args.int8, calib=args.calib, check=args.check)
    run = export_file(args.file, args.onnx, cfg, data=args.data, **model_file_options(args))
    print(f"{run.kind} -> {args.onnx}")
    if run.accuracy is not None:
        print(f"ONNX Runtime accuracy on {run.checked} test images: {run.accuracy * 100:.2f}%")
    return 0
