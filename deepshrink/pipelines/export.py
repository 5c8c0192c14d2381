"""``deepshrink export`` as one call: a model file to ONNX, fp32 or int8 QDQ for ONNX Runtime.

A linearly quantized file is exported with its own grids; a float file as fp32, or with ``int8``
quantized first (per channel, calibrated on the first ``calib`` training images). ``check``
runs that many test images through ONNX Runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..data import Split
from ..errors import ConfigError
from ..io import load_model, read_info
from ..modelfile import input_kind
from ..quant import OrtSession, QuantConfig, export_onnx, export_qdq, is_quantized_file, load_quantized, quantize_ptq
from .inputs import data_for
from .quantize import calibration_images

__all__ = ["ExportConfig", "ExportRun", "export_file"]


@dataclass
class ExportConfig:
    int8: bool = False                  # a float file: quantize it first (int8 QDQ graph)
    calib: int = 512                    # calibration images for ``int8``
    check: int = 0                      # test images run through ONNX Runtime (0: none)


@dataclass
class ExportRun:
    kind: str                           # what was written, in words
    onnx: str
    checked: int = 0                    # test images run through ONNX Runtime
    accuracy: float | None = None       # their ONNX Runtime accuracy


def export_file(src: str | os.PathLike, onnx: str | os.PathLike, cfg: ExportConfig | None = None, *,
                data: str | None = None, arch: str | None = None, trust_code: bool = False,
                seq_len: int | None = None, tokenizer: str | None = None) -> ExportRun:
    """Export the model in ``src`` to ``onnx``; data (for ``int8`` and ``check``): ``data``, else
    the data set the file records."""
    cfg = cfg or ExportConfig()
    src = os.fspath(src)
    info = read_info(src) if src.endswith(".safetensors") else None
    if info is not None and is_quantized_file(info):
        gm, info = load_quantized(src, trust_code=trust_code)
        export_qdq(gm, onnx, info.input_shape)
        kind = "int8 QDQ (the file's own grids)"
    else:
        model, info = load_model(src, arch=arch, trust_code=trust_code, seq_len=seq_len, tokenizer=tokenizer)
        if input_kind(info) == "tokens":
            raise ConfigError(f"{src}: ONNX export takes models of images; a text model (token ids) is not "
                              "exported yet")
        if cfg.int8:
            ds = data_for(info, data, src, trust_code)
            gm = quantize_ptq(model, calibration_images(ds, cfg.calib), QuantConfig(per_channel=True))
            export_qdq(gm, onnx, info.input_shape)
            kind = f"int8 QDQ (calibrated on {min(cfg.calib, len(ds.train))} images)"
        else:
            export_onnx(model, onnx, info.input_shape)
            kind = "fp32"
    run = ExportRun(kind, os.fspath(onnx))
    if cfg.check:
        ds = data_for(info, data, src, trust_code)
        run.checked = min(cfg.check, len(ds.test))
        run.accuracy = OrtSession(onnx).evaluate(Split(ds.test.x[:run.checked], ds.test.y[:run.checked]))
    return run
