"""Fake-quantization modules: a quantizer for one tensor, and conv/linear with quantized weights.

``FakeQuant`` holds (scale, zero_point) for one tensor (per tensor or per channel) and an
observer; it is switched between observing (calibration), quantizing (the fake-quantized
float model of Jacob et al. 2018, section 3) or both. ``QuantLayer`` wraps a (BN-folded)
conv or linear layer: its weight goes through a weight ``FakeQuant`` and its bias is rounded
to the int32 grid of step S_in * S_w, exactly as the integer engine stores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import QScheme, choose_qparams, fake_quantize, lsq_fake_quantize
from .observers import make_observer

__all__ = ["FakeQuant", "SharedFakeQuant", "QuantLayer", "INT32_MIN", "INT32_MAX"]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


class FakeQuant(nn.Module):
    """Quantizer of one tensor: ``observing`` records ranges, ``enabled`` fake-quantizes.

    ``dynamic`` (QAT weights): while training, the range is recomputed from each batch's
    tensor (min-max), so the step follows the weights. ``learnable`` (LSQ): the scale is a
    parameter trained by gradient descent instead.
    """

    def __init__(self, scheme: QScheme, observer: str = "minmax", channels: int = 1):
        super().__init__()
        scheme.check()
        self.scheme = scheme
        self.observer_name = observer
        self.observer = make_observer(observer, scheme)
        n = channels if scheme.per_channel else 1
        self.register_buffer("scale", torch.ones(n))
        self.register_buffer("zero_point", torch.zeros(n, dtype=torch.int64))
        self.observing = False
        self.enabled = False
        self.dynamic = False
        self.learnable = False

    @property
    def axis(self) -> int | None:
        return self.scheme.axis if self.scheme.per_channel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observer.update(x)
        if not self.enabled:
            return x
        if self.dynamic and self.training:
            with torch.no_grad():
                self.observer = make_observer("minmax", self.scheme)
                self.observer.update(x)
                self.freeze()
        if self.learnable:
            return lsq_fake_quantize(x, self.scale, self.zero_point, self.scheme.qmin, self.scheme.qmax, self.axis)
        return fake_quantize(x, self.scale, self.zero_point, self.scheme.qmin, self.scheme.qmax, self.axis)

    @torch.no_grad()
    def freeze(self) -> None:
        """Set (scale, zero_point) from what the observer saw."""
        lo, hi = self.observer.bounds()
        scale, zp = choose_qparams(lo, hi, self.scheme)
        self.scale.data.copy_(scale.reshape(self.scale.shape))
        self.zero_point.copy_(zp.reshape(self.zero_point.shape))

    def make_learnable(self) -> None:
        """LSQ: the scale becomes a trainable parameter (symmetric schemes only)."""
        if not self.learnable:
            s = self.scale.detach().clone()
            del self._buffers["scale"]
            self.scale = nn.Parameter(s)
            self.learnable = True

    def extra_repr(self) -> str:
        s = self.scheme
        return (f"bits={s.bits}, {'symmetric' if s.symmetric else 'asymmetric'}, "
                f"{'per-channel' if s.per_channel else 'per-tensor'}, observer={self.observer_name}")


class SharedFakeQuant(nn.Module):
    """Re-quantize with another quantizer's parameters (after average pooling: same grid)."""

    def __init__(self, source: FakeQuant):
        super().__init__()
        object.__setattr__(self, "source", source)  # not a child: its state lives elsewhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.source
        if not q.enabled:
            return x
        return fake_quantize(x, q.scale.detach(), q.zero_point, q.scheme.qmin, q.scheme.qmax, None)


class QuantLayer(nn.Module):
    """A conv or linear layer computing with fake-quantized weight and int32-grid bias."""

    def __init__(self, layer: nn.Module, weight_fq: FakeQuant):
        super().__init__()
        self.layer = layer
        self.weight_fq = weight_fq
        layer.weight_bits = weight_fq.scheme.bits      # read by the profiler's size column
        object.__setattr__(self, "input_fq", None)   # set by prepare(): the input's quantizer

    @property
    def profiled_layer(self) -> nn.Module:
        """The profiler counts this wrapper as the conv/linear it computes."""
        return self.layer

    def bias_scale(self) -> torch.Tensor:
        """S_in * S_w, (C_out,) or (1,)."""
        return (self.input_fq.scale * self.weight_fq.scale).detach()

    def quantized_bias(self) -> torch.Tensor | None:
        b = self.layer.bias
        if b is None or not self.weight_fq.enabled or self.input_fq is None or not self.input_fq.enabled:
            return b
        return fake_quantize(b, self.bias_scale(), 0, INT32_MIN, INT32_MAX, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_fq(self.layer.weight)
        b = self.quantized_bias()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, b)   # (N, C_out, H', W')
        return F.linear(x, w, b)                       # (N, out_features)
