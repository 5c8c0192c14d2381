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
from ..modelfile import example_input, input_kind
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
                seq_len: int | None = None, tokenizer: str | None = None, model_kwargs: dict | None = None) -> ExportRun:
    """Export the model in ``src`` to ``onnx``; data (for ``int8`` and ``check``): ``data``, else
    the data set the file records."""
    cfg = cfg or ExportConfig()
    src = os.fspath(src)
    info = read_info(src) if src.endswith(".safetensors") else None
    ds = None                                           # the data set, loaded once when needed
    if info is not None and is_quantized_file(info):
        gm, info = load_quantized(src, trust_code=trust_code)
        export_qdq(gm, onnx, info.input_shape)
        kind = "int8 QDQ (the file's own grids)"
    else:
        model, info = load_model(src, arch=arch, kwargs=model_kwargs, trust_code=trust_code, seq_len=seq_len,
                                 tokenizer=tokenizer)
        tokens = input_kind(info) == "tokens"
        if tokens and cfg.check:
            raise ConfigError(f"{src}: --check measures accuracy on labelled images; compare a text model's "
                              "outputs with deepshrink evaluate --reference")
        if not tokens and (cfg.int8 or cfg.check or data is not None or info.mean is None):
            ds = data_for(info, data, src, trust_code)  # a plain state dict takes its input shape from the data
        if cfg.int8:
            if tokens:
                raise ConfigError(f"{src}: the int8 QDQ export takes models of images; a text model's int8 "
                                  "ONNX comes from ONNX Runtime's dynamic quantization of its fp32 export")
            gm = quantize_ptq(model, calibration_images(ds, cfg.calib), QuantConfig(per_channel=True))
            export_qdq(gm, onnx, info.input_shape)
            kind = f"int8 QDQ (calibrated on {min(cfg.calib, len(ds.train))} images)"
        else:
            stats = {} if info.mean is None else {"mean": info.mean, "std": info.std}
            export_onnx(model, onnx, example_input(info, (1, *info.input_shape)) if tokens else info.input_shape,
                        metadata=stats)
            kind = "fp32 (token ids in)" if tokens else "fp32"
    run = ExportRun(kind, os.fspath(onnx))
    if cfg.check:
        ds = ds or data_for(info, data, src, trust_code)
        run.checked = min(cfg.check, len(ds.test))
        run.accuracy = OrtSession(onnx).evaluate(Split(ds.test.x[:run.checked], ds.test.y[:run.checked]))
    return run
