"""Per-layer cost counters: one pure function per layer type, in an explicit registry.

Each counter sees the module, its inputs and its output and returns a :class:`LayerCost`.

Definitions (docs/METHODS.md, "Profiling"):

* ``macs``: multiply-accumulates of convolutions and linear layers, the paper's unit.
  Conv2d: N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w. Linear: rows * in * out.
* ``nonzero_macs``: the MACs whose weight is nonzero (what a sparse kernel must do):
  output positions x nonzero weights.
* ``multiplications`` / ``additions``: every arithmetic operation, counted apart. A conv output
  needs k*k*C_in products and k*k*C_in - 1 additions, one more with a bias. An adder layer
  (AdderNet) output needs k*k*C_in subtractions and k*k*C_in - 1 additions and no products:
  its MACs and multiplications are 0.
* ``reads_per_op`` / ``writes`` (per operation): every
  operand read counts once per operation, so a MAC reads an input and a weight (2 reads), and
  every output written counts once.
* ``min_reads`` / ``writes`` (minimal traffic): each input element and each parameter is read
  once, each output element written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..nn import AdderConv2d, AdderLinear

__all__ = ["LayerCost", "COUNTERS", "count_layer", "count_elementwise", "find_counter"]


@dataclass
class LayerCost:
    macs: int = 0
    nonzero_macs: int = 0
    multiplications: int = 0
    additions: int = 0
    reads_per_op: int = 0
    min_reads: int = 0
    writes: int = 0

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(**{f: getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__})


def _numel(t) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _nnz(t: torch.Tensor | None) -> int:
    return int(torch.count_nonzero(t)) if t is not None else 0


def _params(m: nn.Module) -> int:
    return sum(int(p.numel()) for p in m.parameters(recurse=False))


def _weighted_layer(m: nn.Module, x: torch.Tensor, y: torch.Tensor, positions: int, per_output: int) -> LayerCost:
    """A layer whose every output is a dot product of ``per_output`` inputs and weights, at
    ``positions`` places (conv: N * H_out * W_out, linear: the rows); bias optional."""
    outputs = _numel(y)
    macs = outputs * per_output
    return LayerCost(
        macs=macs,
        nonzero_macs=positions * _nnz(m.weight),
        multiplications=macs,
        additions=macs - outputs + (outputs if m.bias is not None else 0),
        reads_per_op=2 * macs,
        min_reads=_numel(x) + _params(m),
        writes=outputs,
    )


def count_conv(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    positions = y.shape[0] * y.shape[2] * y.shape[3]                # N * H_out * W_out
    per_output = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    return _weighted_layer(m, x, y, positions, per_output)


def count_linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    return _weighted_layer(m, x, y, _numel(y) // m.out_features, m.in_features)


def count_adder(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    """AdderNet layers (deepshrink.nn, Chen et al. 2020): per output K subtractions |x - w|
    and K - 1 additions of them (one more with a bias), K = C_in k_h k_w or in_features;
    no multiplications, so no MACs. Each subtraction reads an input and a weight."""
    outputs = _numel(y)
    k = m.in_channels * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, AdderConv2d) else m.in_features
    terms = outputs * k
    return LayerCost(additions=2 * terms - outputs + (outputs if m.bias is not None else 0),
                     reads_per_op=2 * terms, min_reads=_numel(x) + _params(m), writes=outputs)


def count_batchnorm(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    # inference form y = a * x + b per element (a, b folded from the statistics)
    n = _numel(y)
    return LayerCost(multiplications=n, additions=n, reads_per_op=3 * n,
                     min_reads=n + 2 * int(x.shape[1]), writes=n)


def count_elementwise(x_numel: int, y_numel: int, operands: int = 1, arith: int = 0) -> LayerCost:
    """Activations and tensor adds: ``operands`` reads and ``arith`` additions per output."""
    return LayerCost(additions=arith * y_numel, reads_per_op=operands * y_numel,
                     min_reads=x_numel, writes=y_numel)


def count_activation(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    return count_elementwise(_numel(x), _numel(y))


def count_maxpool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    if isinstance(m, nn.MaxPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
        window = k[0] * k[1]
    else:  # adaptive pooling has no kernel_size: the average window
        window = max(1, _numel(x) // max(1, _numel(y)))
    return LayerCost(reads_per_op=window * _numel(y), min_reads=_numel(x), writes=_numel(y))


def count_avgpool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    out = _numel(y)
    window = max(1, _numel(x) // max(1, out))
    return LayerCost(additions=out * (window - 1), multiplications=out,
                     reads_per_op=window * out, min_reads=_numel(x), writes=out)


def count_nothing(m: nn.Module, x, y) -> LayerCost:
    """Views and identities in eval mode (flatten, dropout): no arithmetic, no traffic."""
    return LayerCost()


COUNTERS: dict[type, Callable[[nn.Module, torch.Tensor, torch.Tensor], LayerCost]] = {
    nn.Conv2d: count_conv,
    nn.Linear: count_linear,
    AdderConv2d: count_adder,
    AdderLinear: count_adder,
    nn.BatchNorm1d: count_batchnorm,
    nn.BatchNorm2d: count_batchnorm,
    nn.ReLU: count_activation,
    nn.ReLU6: count_activation,
    nn.LeakyReLU: count_activation,
    nn.Hardtanh: count_activation,
    nn.Sigmoid: count_activation,
    nn.Tanh: count_activation,
    nn.GELU: count_activation,
    nn.SiLU: count_activation,
    nn.MaxPool2d: count_maxpool,
    nn.AdaptiveMaxPool2d: count_maxpool,
    nn.AvgPool2d: count_avgpool,
    nn.AdaptiveAvgPool2d: count_avgpool,
    nn.Flatten: count_nothing,
    nn.Dropout: count_nothing,
    nn.Identity: count_nothing,
    nn.Sequential: count_nothing,  # reached only when empty (an identity shortcut)
}


def find_counter(m: nn.Module) -> Callable | None:
    """The first registered counter along the module's MRO, or None."""
    for cls in type(m).__mro__:
        fn = COUNTERS.get(cls)
        if fn is not None:
            return fn
    return None


def count_layer(m: nn.Module, x, y) -> tuple[LayerCost, bool]:
    """(cost, known): the layer's registered counter; (zero, False) without one."""
    fn = find_counter(m)
    return (fn(m, x, y), True) if fn is not None else (LayerCost(), False)
