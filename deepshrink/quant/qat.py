"""Quantization-aware training (Jacob et al. 2018, section 3; Esser et al. 2020 for LSQ).

The model is first quantized post-training (BN folded, activation grids calibrated); then it
is trained with fake quantization in the forward pass and the straight-through estimator in
the backward pass (gradient 1 inside the clipping range, 0 outside: see ``linear``), so the
float weights learn to sit well on their integer grid. Weight grids follow the weights (per
channel min-max, recomputed every step); with ``lsq=True`` every step size, weights' and
activations', is a parameter learnt with the LSQ gradient instead. Activation grids are
otherwise kept from calibration. BatchNorm stays folded: the folded weights are trained.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.fx as fx
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..train import FitResult, TrainConfig, fit
from .graph import QuantConfig, fake_quants, quant_layers
from .observers import make_observer
from .ptq import quantize_ptq

__all__ = ["prepare_qat", "refresh_weight_quantizers", "qat_finetune"]


def prepare_qat(model: nn.Module, calib_x: torch.Tensor, cfg: QuantConfig | None = None,
                lsq: bool = False, ptq: nn.Module | None = None) -> fx.GraphModule:
    """A PTQ-initialised fake-quantized copy of ``model``, in train mode, ready for ``fit``
    (the fx placement: a module-swapped model holds integer weights, which do not train).

    ``ptq``: the fx PTQ of ``model`` with ``cfg`` (:func:`quantize_ptq`), already calibrated, to
    start from instead of quantizing and calibrating again; it is trained in place. A PTQ model of
    another placement (module-swapped) is ignored: the fx one is made as without it."""
    cfg = cfg or QuantConfig()
    if cfg.method == "swap":
        raise ConfigError("quantization-aware training needs the fx placement (method 'fx' or 'auto'), not 'swap'")
    gm = ptq if isinstance(ptq, fx.GraphModule) else quantize_ptq(model, calib_x, replace(cfg, method="fx"))
    weight_fqs = {id(layer.weight_fq) for layer in quant_layers(gm).values()}
    for fq in fake_quants(gm).values():
        if lsq:
            fq.make_learnable()
        elif id(fq) in weight_fqs:
            fq.dynamic = True
    return gm.train()


@torch.no_grad()
def refresh_weight_quantizers(gm: fx.GraphModule) -> None:
    """Recompute the dynamic weight grids from the final weights (after the last step)."""
    for layer in quant_layers(gm).values():
        fq = layer.weight_fq
        if fq.dynamic:
            fq.observer = make_observer("minmax", fq.scheme)
            fq.observer.update(layer.layer.weight)
            fq.freeze()


def qat_finetune(model: nn.Module, data: Dataset, calib_x: torch.Tensor, cfg: QuantConfig | None = None,
                 train_cfg: TrainConfig | None = None, lsq: bool = False,
                 ptq: nn.Module | None = None) -> tuple[fx.GraphModule, FitResult]:
    """PTQ (unless ``ptq`` gives it: :func:`prepare_qat`), then ``fit`` with fake quantization;
    returns the frozen model (eval mode)."""
    gm = prepare_qat(model, calib_x, cfg, lsq, ptq=ptq)
    result = fit(gm, data, train_cfg or TrainConfig(epochs=1, lr=0.002, warmup_epochs=0.0))
    refresh_weight_quantizers(gm)
    return gm.eval(), result
