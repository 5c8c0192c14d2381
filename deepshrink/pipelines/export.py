"""``deepshrink export`` as one call: a model file to ONNX, fp32 or int8 QDQ for ONNX Runtime.

A linearly quantized file is exported with its own grids; a float file as fp32, or with ``int8``
quantized first (per channel, calibrated on the first ``calib`` training images), or with
``ort_int8`` as ONNX Runtime's dynamic int8 of the fp32 graph (images or token ids). ``check``
runs that many test images through ONNX Runtime.

Every file describes its input in its ``metadata_props`` (:func:`onnx_metadata_for`): the layout
and shape, the normalisation (mean, std) and the range of values expected, or for a text model
the sequence length and pad id; the deepshrink version and the source model. With
``bake_preprocessing`` the normalisation is the graph's first nodes, so it takes raw [0, 1]
images. :func:`metadata_summary` is that record in one line, as the command prints it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass, field

import torch

from ..data import Split
from ..errors import ConfigError
from ..hf import is_hf_spec
from ..io import ModelInfo, load_model, read_info
from ..modelfile import example_input, input_kind
from ..quant import (OrtSession, QuantConfig, export_onnx, export_ort_dynamic_int8, export_qdq, is_quantized_file,
                     load_quantized, quantize_ptq)
from ..quant.export_fp32 import input_value_props, onnx_metadata
from .inputs import data_for
from .quantize import calibration_images

__all__ = ["ExportConfig", "ExportRun", "export_file", "onnx_metadata_for", "metadata_summary", "version"]


@dataclass
class ExportConfig:
    int8: bool = False                  # a float file: quantize it first (int8 QDQ graph)
    calib: int = 512                    # calibration images for ``int8``
    check: int = 0                      # test images run through ONNX Runtime (0: none)
    ort_int8: bool = False              # ONNX Runtime's dynamic int8 (quantize_dynamic) of the fp32 graph
    bake_preprocessing: bool = False    # the normalisation as the graph's first nodes: raw [0, 1] images in


@dataclass
class ExportRun:
    kind: str                           # what was written, in words
    onnx: str
    checked: int = 0                    # test images run through ONNX Runtime
    accuracy: float | None = None       # their ONNX Runtime accuracy
    metadata: dict[str, str] = field(default_factory=dict)   # what the file's metadata_props say of its input


def version() -> str:
    """The installed deepshrink's version (the package's own ``__version__`` when not installed): what
    the ONNX metadata records and ``deepshrink --version`` prints."""
    try:
        return importlib.metadata.version("deepshrink")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__
        return __version__


def _source_name(src: str) -> str:
    """The source model as the metadata names it: its file name (``hf:`` and the folder's name
    for a Hugging Face folder), never the folders above it."""
    if is_hf_spec(src):
        return "hf:" + os.path.basename(os.path.normpath(src[3:]))
    return os.path.basename(os.path.normpath(src))


def onnx_metadata_for(info: ModelInfo, src: str, baked: bool = False) -> dict[str, str]:
    """What an ONNX file exported from ``info``'s model records about its input and origin (the
    exporters add ``input_layout``, ``exporter`` and ``quantization``)."""
    props = {"deepshrink_version": version(), "source_model": _source_name(src), "architecture": info.arch}
    if input_kind(info) == "tokens":
        pad = info.kwargs.get("pad_id") if isinstance(info.kwargs, dict) else None
        seq = info.input_shape[0] if info.input_shape else None
        props.update({"input_kind": "token ids", "input_shape": json.dumps(["batch", "seq"]),
                      "seq_len": json.dumps(seq), "pad_id": json.dumps(pad),
                      "input_values": f"int64 token ids from the model's tokenizer, {seq} per sentence as trained "
                                      f"(any length runs), padded with id {pad}, which the graph masks out"})
        if info.extra.get("tokenizer"):
            props["tokenizer"] = os.path.basename(os.path.normpath(str(info.extra["tokenizer"])))
    else:
        props.update({"input_kind": "images", "input_shape": json.dumps(["batch", *info.input_shape])})
        props.update(input_value_props(info.mean, info.std, baked))
    if info.data:
        props["data"] = info.data
    if info.accuracy is not None:
        props["source_accuracy"] = f"{info.accuracy:.4f}"
    return props


def metadata_summary(props: dict[str, str]) -> str:
    """The input an exported graph expects, in one line, from its metadata."""
    layout = props.get("input_layout", "")
    if props.get("input_kind") == "token ids":
        return (f"input: {layout}, seq_len {props.get('seq_len')}, pad id {props.get('pad_id')} "
                "(recorded in metadata_props)")
    head = f"input: {layout} [{', '.join(str(d) for d in json.loads(props.get('input_shape', '[]')))}]"
    if "mean" not in props:
        return f"{head}, {props.get('input_values', '')} (recorded in metadata_props)"
    stats = (f"mean {[round(v, 4) for v in json.loads(props['mean'])]} "
             f"std {[round(v, 4) for v in json.loads(props['std'])]}")
    if props.get("preprocessing_baked") == "true":
        return f"{head}, raw images in [0, 1]; the graph normalises them ({stats}; recorded in metadata_props)"
    return (f"{head}, normalised: (x - mean) / std of x in [0, 1], {stats} (recorded in metadata_props; "
            "--bake-preprocessing: raw [0, 1] in)")


def _normalize(info: ModelInfo, cfg: ExportConfig, src: str) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` to bake into the graph (``bake_preprocessing``), else None."""
    if not cfg.bake_preprocessing:
        return None
    if input_kind(info) == "tokens":
        raise ConfigError(f"{src}: --bake-preprocessing bakes an image normalisation into the graph; a text model "
                          "takes token ids, there is none to bake")
    if info.mean is None or info.std is None:
        raise ConfigError(f"{src}: records no normalisation (mean, std) to bake; pass --data with the data set it "
                          "was trained on")
    return list(info.mean), list(info.std)


def export_file(src: str | os.PathLike, onnx: str | os.PathLike, cfg: ExportConfig | None = None, *,
                data: str | None = None, arch: str | None = None, trust_code: bool = False,
                seq_len: int | None = None, tokenizer: str | None = None, model_kwargs: dict | None = None) -> ExportRun:
    """Export the model in ``src`` to ``onnx``; data (for ``int8`` and ``check``): ``data``, else
    the data set the file records."""
    cfg = cfg or ExportConfig()
    src = os.fspath(src)
    if cfg.int8 and cfg.ort_int8:
        raise ConfigError("--int8 (a QDQ graph on deepshrink's calibrated grids) and --ort-int8 (ONNX Runtime's "
                          "dynamic quantization) write different files: choose one")
    info = read_info(src) if src.endswith(".safetensors") else None
    ds = None                                           # the data set, loaded once when needed
    if info is not None and is_quantized_file(info):
        if cfg.ort_int8:
            raise ConfigError(f"{src}: is already linearly quantized and exports as int8 QDQ on its own grids; "
                              "--ort-int8 quantizes a float model")
        gm, info = load_quantized(src, trust_code=trust_code)
        normalize = _normalize(info, cfg, src)
        export_qdq(gm, onnx, info.input_shape, metadata=onnx_metadata_for(info, src, normalize is not None),
                   normalize=normalize)
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
        normalize = _normalize(info, cfg, src)
        meta = onnx_metadata_for(info, src, normalize is not None)
        inputs = example_input(info, (1, *info.input_shape)) if tokens else info.input_shape
        if cfg.int8:
            if tokens:
                raise ConfigError(f"{src}: the int8 QDQ export takes models of images; a text model's int8 "
                                  "ONNX is ONNX Runtime's dynamic quantization of its fp32 export: --ort-int8")
            gm = quantize_ptq(model, calibration_images(ds, cfg.calib), QuantConfig(per_channel=True))
            export_qdq(gm, onnx, info.input_shape, metadata=meta, normalize=normalize)
            kind = f"int8 QDQ (calibrated on {min(cfg.calib, len(ds.train))} images)"
        elif cfg.ort_int8:
            export_ort_dynamic_int8(model, onnx, inputs, metadata=meta, normalize=normalize)
            kind = "ONNX Runtime dynamic int8 (quantize_dynamic: int8 weights, activations quantized per call" + \
                ("; token ids in)" if tokens else ")")
        else:
            export_onnx(model, onnx, inputs, metadata=meta, normalize=normalize)
            kind = "fp32 (token ids in)" if tokens else "fp32"
    run = ExportRun(kind, os.fspath(onnx), metadata=onnx_metadata(onnx))
    if cfg.check:
        ds = ds or data_for(info, data, src, trust_code)
        run.checked = min(cfg.check, len(ds.test))
        x = ds.test.x[:run.checked]
        if normalize is not None:                       # the graph normalises: give it the images as loaded
            shape = (1, -1) + (1,) * (x.dim() - 2)
            x = x * torch.tensor(ds.std, dtype=x.dtype).view(shape) + torch.tensor(ds.mean, dtype=x.dtype).view(shape)
        run.accuracy = OrtSession(onnx).evaluate(Split(x, ds.test.y[:run.checked]))
    return run

