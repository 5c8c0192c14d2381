"""Post-training quantization of a whole model from calibration data (Jacob et al. 2018).

prepare (fold BN, place quantizers) -> calibrate (run N images with every quantizer observing)
-> freeze_observers (each observer names its range, hence (S, Z)) -> the fake-quantized float model.
Weights are observed once from the tensor itself; activations from the calibration batches.
A quantized model is saved as its GraphModule state (folded weights, scales, zero points)
plus the config in ``ModelInfo.extra["quant"]``; loading re-runs prepare on the architecture
and restores that state, so no code is ever unpickled.
"""

from __future__ import annotations

import os

import torch
import torch.fx as fx
from torch import nn

from ..errors import DeepShrinkError, FormatError, ModelError
from ..modelfile import ModelInfo, model_from_state, read_safetensors, save_model
from .graph import QuantConfig, fake_quants, prepare, quant_layers

__all__ = ["set_mode", "calibrate", "freeze_observers", "quantize_ptq", "save_quantized", "load_quantized",
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
def freeze_observers(gm: fx.GraphModule) -> fx.GraphModule:
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
    return freeze_observers(gm)


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
    """Rebuild a model written by ``save_quantized`` (fake quantization on, eval mode): the model
    file's loading sequence with the fake quantizers inserted before the state is loaded."""
    state, info = read_safetensors(path)
    if info is None or not is_quantized_file(info):
        raise FormatError(f"{path}: not a linearly quantized model (no extra.quant record)")
    try:
        cfg = QuantConfig.from_dict(info.extra["quant"]["config"])
        cfg.check()
    except (DeepShrinkError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: metadata field 'extra.quant.config' is not a quantization config ({exc})") from None

    def insert_quantizers(model: nn.Module) -> nn.Module:
        gm = prepare(model, cfg)
        for layer in quant_layers(gm).values():  # the folded conv may have gained a bias
            if layer.layer.bias is None:
                layer.layer.bias = nn.Parameter(torch.zeros(layer.layer.weight.shape[0]))
        return gm

    gm = model_from_state(info, state, trust_code, str(path), transform=insert_quantizers)
    set_mode(gm, observing=False, enabled=True)
    return gm.eval(), info
