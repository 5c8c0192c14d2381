"""Module swap: quantize any ``nn.Module`` by replacing its layers with integer twins, no tracing.

The fx route (:mod:`.graph`) needs a graph torch.fx can follow; a Hugging Face transformer,
or any model with data-dependent Python in its forward, has none. Module swap needs only the
module tree: every ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d`` (and, with ``cfg.embeddings``,
every ``nn.Embedding``) whose name no ``cfg.exclude`` glob matches is replaced by its twin of
:mod:`.qmodules`, holding int8 or packed int4 codes with per-channel symmetric scales; linear
layers also quantize their inputs per row at run time when ``cfg.dynamic_activations`` is set
(the scheme of ``torch.ao.quantization.quantize_dynamic``, with per-channel weights and a grid
per token: asymmetric, with a zero point, unless ``cfg.act_symmetric``). Given calibration inputs,
those layers are first smoothed (SmoothQuant, :mod:`.smooth`, ``cfg.smooth_alpha``).
Everything else (LayerNorm, attention arithmetic, activations) stays float. Which layers were
swapped, at which bits, is data (``{name: bits}``, and the names of the smoothed ones): a file
records it and :func:`swap_shells_` rebuilds the same twins on a fresh architecture.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .graph import QuantConfig
from .qmodules import QUANT_MODULES, QuantLinear
from .smooth import input_ranges, smooth_factors

__all__ = ["calibration_batches", "swap_plan", "swap_quantize", "swap_shells_", "swapped_layers"]


def _wanted(name: str, module: nn.Module, cfg: QuantConfig) -> bool:
    """A twin exists for its exact type, no exclude glob (fnmatch, ``*`` crosses dots) matches its name."""
    if type(module) not in QUANT_MODULES or any(fnmatchcase(name, g) for g in cfg.exclude):
        return False
    return cfg.embeddings or not isinstance(module, nn.Embedding)


def swap_plan(model: nn.Module, cfg: QuantConfig) -> dict[str, int]:
    """{layer name: weight bits} of the layers ``cfg`` swaps in ``model``."""
    cfg.check()
    if not cfg.weight_symmetric:
        raise ConfigError("module swap stores symmetric weight codes; set weight_symmetric=True (or use method='fx')")
    idle = [g for g in cfg.exclude if not any(fnmatchcase(n, g) for n, _ in model.named_modules())]
    if idle:
        raise ConfigError(f"exclude globs match no layer: {idle}")
    plan = {name: cfg.layer_bits.get(name, cfg.weight_bits)
            for name, m in model.named_modules() if name and _wanted(name, m, cfg)}
    unknown = set(cfg.layer_bits) - set(plan)
    if unknown:
        raise ConfigError(f"layer_bits names no layer that module swap quantizes: {sorted(unknown)}")
    for name in plan:
        m = model.get_submodule(name)
        if isinstance(m, nn.Embedding) and m.max_norm is not None:
            raise ConfigError(f"embedding {name!r} renormalises its weight (max_norm); exclude it from quantization")
    return plan


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _shell(m: nn.Module, bits: int, act_bits: int | None, act_symmetric: bool = True,
           smoothed: bool = False) -> nn.Module:
    if isinstance(m, nn.Linear):
        twin = QuantLinear.shell(m, bits, act_bits, act_symmetric, smoothed)
    else:
        twin = QUANT_MODULES[type(m)].shell(m, bits, act_bits)
    return twin.to(next(iter(m.parameters())).device)


def swap_shells_(model: nn.Module, plan: dict[str, int], act_bits: int | None, where: str = "model",
                 act_symmetric: bool = True, smoothed: frozenset[str] | set[str] = frozenset()) -> nn.Module:
    """Replace the layers named in ``plan`` by twins with empty codes (to be loaded), in place;
    linear twins quantize their inputs symmetrically or not (``act_symmetric``), and those named in
    ``smoothed`` hold a smoothing vector."""
    stray = set(smoothed) - set(plan)
    if stray:
        raise ModelError(f"{where}: smoothed layers {sorted(stray)[:5]} are not among the quantized layers")
    for name, bits in plan.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"{where}: quantized layer {name!r} is not in the architecture") from None
        if type(m) not in QUANT_MODULES:
            raise ModelError(f"{where}: quantized layer {name!r} is a {type(m).__name__}, not one of "
                             f"{', '.join(t.__name__ for t in QUANT_MODULES)}")
        if name in smoothed and not isinstance(m, nn.Linear):
            raise ModelError(f"{where}: smoothed layer {name!r} is a {type(m).__name__}, not a Linear")
        _set(model, name, _shell(m, bits, act_bits, act_symmetric, name in smoothed))
    return model


def calibration_batches(calib, batch_size: int = 64):
    """Inputs from a tensor (N, ...) in batches of ``batch_size``, or from a loader yielding x or (x, y)."""
    if isinstance(calib, torch.Tensor):
        for lo in range(0, len(calib), batch_size):
            yield calib[lo:lo + batch_size]
        return
    for item in calib:
        yield item[0] if isinstance(item, (tuple, list)) else item


def swap_quantize(model: nn.Module, cfg: QuantConfig | None = None, calib=None) -> nn.Module:
    """A copy of ``model`` (eval mode) with its layers swapped for integer twins, per ``cfg``.

    With ``calib`` (inputs (N, ...) or a loader) and ``cfg.smooth_alpha`` set, the linear layers
    that quantize their activations are smoothed first (:mod:`.smooth`), from the input ranges the
    float model shows on ``calib``. Shared (tied) layers are quantized once per name they appear under."""
    cfg = cfg or QuantConfig()
    plan = swap_plan(model, cfg)
    out = copy.deepcopy(model).eval()
    act_bits = cfg.act_bits if cfg.dynamic_activations else None
    ranges: dict = {}
    if calib is not None and act_bits is not None and cfg.smooth_alpha is not None:
        linear = [n for n in plan if isinstance(out.get_submodule(n), nn.Linear)]
        ranges = input_ranges(out, linear, calibration_batches(calib))
    for name, bits in plan.items():
        m = out.get_submodule(name)
        twin = _shell(m, bits, act_bits, cfg.act_symmetric, name in ranges)
        weight = m.weight.detach()
        if name in ranges:
            s = smooth_factors(ranges[name], weight, cfg.smooth_alpha)      # (K,)
            twin.input_smooth.copy_(s)
            weight = weight * s[None, :]
        twin.set_weight(weight, cfg.per_channel, cfg.weight_observer)
        if getattr(m, "bias", None) is not None:
            twin.bias.data.copy_(m.bias.detach())
        _set(out, name, twin)
    return out


def swapped_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: twin} of the module-swapped layers of ``model``."""
    kinds = tuple(set(QUANT_MODULES.values()))
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}

