"""Post-training quantization of a whole model from calibration data (Jacob et al. 2018).

prepare (fold BN, place quantizers) -> calibrate (run N images with every quantizer observing)
-> freeze (each observer names its range, hence (S, Z)) -> the fake-quantized float model.
Weights are observed once from the tensor itself; activations from the calibration batches.
A quantized model is saved as its GraphModule state (folded weights, scales, zero points)
plus the config in ``ModelInfo.extra["quant"]``; loading re-runs prepare on the architecture
and restores that state, so no code is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.fx as fx
from safetensors.torch import load_file
from torch import nn

from ..errors import FormatError, ModelError
from ..io import EXTRA_BUFFER_SUFFIXES, ModelInfo, build_arch, read_info, resize_to_state, save_model
from .graph import QuantConfig, fake_quants, prepare, quant_layers

__all__ = ["set_mode", "calibrate", "freeze", "quantize_ptq", "save_quantized", "load_quantized",
           "is_quantized_file"]


def set_mode(gm: nn.Module, observing: bool | None = None, enabled: bool | None = None) -> None:
    for fq in fake_quants(gm).values():
        if observing is not None:
            fq.observing = observing
        if enabled is not None:
            fq.enabled = enabled


def _batches(x, batch_size: int):
    """Batches of images from a tensor (N, ...) or a loader yielding x or (x, y)."""
    if isinstance(x, torch.Tensor):
        for lo in range(0, len(x), batch_size):
            yield x[lo:lo + batch_size]
        return
    for item in x:
        yield item[0] if isinstance(item, (tuple, list)) else item


@torch.no_grad()
def calibrate(gm: fx.GraphModule, x, batch_size: int = 256) -> None:
    """Observe activations in float on ``x`` (a tensor (N, ...) or a calibration loader)."""
    gm.eval()
    set_mode(gm, observing=True, enabled=False)
    seen = 0
    for xb in _batches(x, batch_size):
        gm(xb)
        seen += len(xb)
    set_mode(gm, observing=False)
    if seen == 0:
        raise ModelError("calibration needs at least one image")


@torch.no_grad()
def freeze(gm: fx.GraphModule) -> fx.GraphModule:
    """Turn observations into (scale, zero point) and switch fake quantization on."""
    for name, fq in fake_quants(gm).items():
        if fq.observer.lo is None:
            raise ModelError(f"quantizer {name} saw no data during calibration")
        fq.freeze()
    set_mode(gm, observing=False, enabled=True)
    return gm


def quantize_ptq(model: nn.Module, calib_x, cfg: QuantConfig | None = None,
                 batch_size: int = 256) -> fx.GraphModule:
    """The fake-quantized (folded, traced) copy of ``model``, calibrated on ``calib_x``
    (images (N, ...), or a loader yielding images or (images, labels) batches)."""
    gm = prepare(model, cfg)
    calibrate(gm, calib_x, batch_size)
    return freeze(gm)


def save_quantized(gm: fx.GraphModule, path: str | os.PathLike, info: ModelInfo, cfg: QuantConfig,
                   accuracy: float | None = None, history: dict | None = None) -> None:
    """Write the quantized model; ``info`` is the float model's, copied and extended."""
    extra = dict(info.extra)
    extra["quant"] = {"method": "linear", "config": cfg.to_dict()}
    new = ModelInfo(**{**info.__dict__, "extra": extra,
                       "history": list(info.history) + ([history] if history else []),
                       "accuracy": accuracy if accuracy is not None else info.accuracy})
    save_model(gm, path, new)


def is_quantized_file(info: ModelInfo) -> bool:
    return isinstance(info.extra.get("quant"), dict) and info.extra["quant"].get("method") == "linear"


def load_quantized(path: str | os.PathLike, trust_code: bool = False) -> tuple[fx.GraphModule, ModelInfo]:
    """Rebuild a model written by ``save_quantized`` (fake quantization on, eval mode)."""
    info = read_info(path)
    if not is_quantized_file(info):
        raise FormatError(f"{path}: not a linearly quantized model (no extra.quant record)")
    cfg = QuantConfig.from_dict(info.extra["quant"]["config"])
    gm = prepare(build_arch(info, trust_code, str(path)), cfg)
    for layer in quant_layers(gm).values():  # the folded conv may have gained a bias
        if layer.layer.bias is None:
            layer.layer.bias = nn.Parameter(torch.zeros(layer.layer.weight.shape[0]))
    state = load_file(Path(path))
    resize_to_state(gm, state)  # pruned layers keep their smaller shapes
    own = gm.state_dict()
    for key, value in state.items():  # pruning masks and other extra buffers beside a weight
        if key not in own and key.endswith(EXTRA_BUFFER_SUFFIXES):
            mod_name, _, attr = key.rpartition(".")
            try:
                gm.get_submodule(mod_name).register_buffer(attr, torch.empty_like(value))
            except AttributeError:
                pass  # reported by load_state_dict below
    try:
        gm.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: tensors do not match the quantized {info.arch!r} "
                         f"({str(exc).splitlines()[-1].strip()})") from None
    set_mode(gm, observing=False, enabled=True)
    return gm.eval(), info
