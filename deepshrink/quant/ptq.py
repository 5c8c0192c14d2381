"""Post-training quantization of a whole model from calibration data (Jacob et al. 2018).

Two placements (``QuantConfig.method``): ``fx`` traces the model, then prepare (fold BN, place
quantizers) -> calibrate (run N images with every quantizer observing) -> freeze_observers (each
observer names its range, hence (S, Z)) -> the fake-quantized float model; ``swap`` replaces
Linear/Conv/Embedding layers by integer twins (:mod:`.swap`: real int8/int4 weights, dynamic
per-row activations), which needs no tracing and no calibration; ``auto`` is fx where the
model traces and swap where it does not (a Hugging Face transformer).
Weights are observed once from the tensor itself; activations from the calibration batches.
A quantized model is saved as its state (fx: the folded weights as integer codes with their
scales and zero points, :mod:`.storage`, and the activation grids; swap: the twins' integer codes
and scales; either way int8 codes one per byte, int4 two per byte, so the weights take 1/4 or
1/8 of their fp32 bytes) plus the config in ``ModelInfo.extra["quant"]`` (swap also:
``placement`` and ``layers`` {name: bits}); loading rebuilds the architecture, re-runs prepare or
the swap on it and restores that state, so no code is ever unpickled. An fx file written with
float weights (before the codes) loads too, to the same model.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConfigError, DeepShrinkError, FormatError, ModelError
from ..modelfile import ModelInfo, model_from_state, read_safetensors, save_state
from ..tracing import trace
from .graph import QuantConfig, fake_quants, prepare, quant_layers
from .qmodules import QuantLinear
from .storage import decode_weights, encode_weights
from .swap import calibration_batches, swap_quantize, swap_shells_, swapped_layers

__all__ = ["set_mode", "calibrate", "freeze_observers", "quantize_ptq", "save_quantized", "load_quantized",
           "is_quantized_file"]


def set_mode(gm: nn.Module, observing: bool | None = None, enabled: bool | None = None) -> None:
    for fq in fake_quants(gm).values():
        if observing is not None:
            fq.observing = observing
        if enabled is not None:
            fq.enabled = enabled


@torch.no_grad()
def calibrate(gm: fx.GraphModule, x, batch_size: int = 256) -> None:
    """Observe activations in float on ``x`` (a tensor (N, ...) or a calibration loader)."""
    gm.eval()
    set_mode(gm, observing=True, enabled=False)
    seen = 0
    for xb in calibration_batches(x, batch_size):
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


def quantize_ptq(model: nn.Module, calib_x=None, cfg: QuantConfig | None = None,
                 batch_size: int = 256) -> nn.Module:
    """A quantized copy of ``model`` (eval mode), placed as ``cfg.method`` says:

    * ``fx``: the fake-quantized (folded, traced) GraphModule, calibrated on ``calib_x``
      (images (N, ...), or a loader yielding images or (images, labels) batches);
    * ``swap``: the module-swapped model; ``calib_x``, when given, calibrates the smoothing of its
      dynamic-activation linear layers (``cfg.smooth_alpha``, :mod:`.smooth`);
    * ``auto`` (default): fx when torch.fx traces ``model``, else swap."""
    cfg = cfg or QuantConfig()
    cfg.check()
    if cfg.method == "swap":
        return swap_quantize(model, cfg, calib_x)
    try:
        traced = trace(copy.deepcopy(model).eval())
    except ModelError:
        if cfg.method == "fx":
            raise
        return swap_quantize(model, cfg, calib_x)
    if calib_x is None:
        raise ConfigError("fx quantization calibrates its activation grids: give calibration inputs")
    gm = prepare(traced, cfg)
    calibrate(gm, calib_x, batch_size)
    return freeze_observers(gm)


def save_quantized(gm: nn.Module, path: str | os.PathLike, info: ModelInfo, cfg: QuantConfig,
                   accuracy: float | None = None, history: dict | None = None) -> None:
    """Write the quantized model; ``info`` is the float model's, copied and extended. The weights
    are written as integer codes (fx: :func:`.storage.encode_weights`; swap: the twins' own)."""
    extra = dict(info.extra)
    extra["quant"] = {"method": "linear", "config": cfg.to_dict()}
    swapped = swapped_layers(gm)
    if swapped:                                 # the swap is data: which layers, at which bits
        linear = [m for m in swapped.values() if isinstance(m, QuantLinear)]
        acts = {m.act_bits for m in linear}
        grids = {m.act_symmetric for m in linear}
        if len(acts) > 1 or len(grids) > 1:
            raise ModelError("swapped linear layers mix activation settings (bits "
                             f"{sorted(acts, key=str)}, symmetric {sorted(grids)}); one file records one setting")
        extra["quant"].update(placement="swap", layers={n: m.weight_bits for n, m in swapped.items()},
                              act_bits=acts.pop() if acts else None,
                              act_symmetric=grids.pop() if grids else True,
                              smoothed=sorted(n for n, m in swapped.items() if getattr(m, "smoothed", False)))
    new = ModelInfo(**{**info.__dict__, "extra": extra,
                       "history": list(info.history) + ([history] if history else []),
                       "accuracy": accuracy if accuracy is not None else info.accuracy})
    save_state(encode_weights(gm), path, new)    # fx layers' float weights as codes; swap twins hold codes


def is_quantized_file(info: ModelInfo) -> bool:
    return isinstance(info.extra.get("quant"), dict) and info.extra["quant"].get("method") == "linear"


def _swap_plan(record: dict, where: str) -> tuple[dict[str, int], int | None, bool, set[str]]:
    """``extra.quant.layers`` ({layer name: bits in 2..8}), ``act_bits`` (2..8 or null),
    ``act_symmetric`` (absent: true, as files written before zero points were) and ``smoothed``
    (layer names; absent: none) of a module-swapped file, checked."""
    layers, act_bits = record.get("layers"), record.get("act_bits")
    symmetric, smoothed = record.get("act_symmetric", True), record.get("smoothed", [])
    if not isinstance(symmetric, bool):
        raise FormatError(f"{where}: metadata field 'extra.quant.act_symmetric' must be true or false, "
                          f"got {symmetric!r}")
    if not isinstance(smoothed, list) or not all(isinstance(n, str) for n in smoothed):
        raise FormatError(f"{where}: metadata field 'extra.quant.smoothed' must be a list of layer names")
    if not isinstance(layers, dict) or not all(isinstance(k, str) and type(v) is int and 2 <= v <= 8
                                               for k, v in layers.items()):
        raise FormatError(f"{where}: metadata field 'extra.quant.layers' must map layer names to bits in 2..8")
    if act_bits is not None and not (type(act_bits) is int and 2 <= act_bits <= 8):
        raise FormatError(f"{where}: metadata field 'extra.quant.act_bits' must be null or 2..8, got {act_bits!r}")
    return layers, act_bits, symmetric, set(smoothed)


def load_quantized(path: str | os.PathLike, trust_code: bool = False) -> tuple[nn.Module, ModelInfo]:
    """Rebuild a model written by ``save_quantized`` (eval mode): the model file's loading
    sequence with the fake quantizers inserted (fx), or the same layers swapped for integer
    twins (swap), before the state is loaded."""
    state, info = read_safetensors(path)
    if info is None or not is_quantized_file(info):
        raise FormatError(f"{path}: not a linearly quantized model (no extra.quant record)")
    try:
        cfg = QuantConfig.from_dict(info.extra["quant"]["config"])
        cfg.check()
    except (DeepShrinkError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: metadata field 'extra.quant.config' is not a quantization config ({exc})") from None
    placement = info.extra["quant"].get("placement", "fx")
    if placement == "swap":
        plan, act_bits, symmetric, smoothed = _swap_plan(info.extra["quant"], str(path))
        model = model_from_state(info, state, trust_code, str(path),
                                 transform=lambda m: swap_shells_(m, plan, act_bits, str(path), symmetric, smoothed))
        return model.eval(), info
    if placement != "fx":
        raise FormatError(f"{path}: metadata field 'extra.quant.placement' must be 'fx' or 'swap', got {placement!r}")

    def insert_quantizers(model: nn.Module) -> nn.Module:
        gm = prepare(model, cfg)
        for layer in quant_layers(gm).values():  # the folded conv may have gained a bias
            if layer.layer.bias is None:
                layer.layer.bias = nn.Parameter(torch.zeros(layer.layer.weight.shape[0]))
        return gm

    state = decode_weights(state, str(path))     # integer codes -> S (q - Z); an older file holds floats
    gm = model_from_state(info, state, trust_code, str(path), transform=insert_quantizers)
    set_mode(gm, observing=False, enabled=True)
    return gm.eval(), info
