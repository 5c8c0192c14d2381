"""Where the quantizers go: a traced, BN-folded model with a FakeQuant on every tensor that
feeds a conv, a linear layer, an add or the output (Jacob et al. 2018, section 3).

Each node of the torch.fx graph has a kind:
* ``compute``: a conv/linear (``QuantLayer``) or an add; its output, after a ReLU that
  follows it alone (fused, as integer inference clamps at the zero point), is re-quantized;
* ``pass``: max-pool, flatten, reshape, dropout, identity, a lone ReLU: codes in, same grid
  out, so the tensor keeps its producer's quantizer;
* ``avg``: average pooling, re-quantized on its input's grid (``SharedFakeQuant``);
* ``fq``: a quantizer inserted here; ``input``/``output``: the graph's ends.
Anything else stays float in the fake-quantized model and the integer engine refuses it.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .fakequant import FakeQuant, QuantLayer, SharedFakeQuant
from .fold import fold_batchnorm
from .linear import QScheme
from .observers import OBSERVERS

__all__ = ["QuantConfig", "METHODS", "prepare", "node_kind", "fused_relu", "quantizer_of", "quant_layers",
           "fake_quants"]

_RELU_FUNCS = (F.relu, torch.relu)
_ADD_FUNCS = (operator.add, torch.add)
_PASS_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_PASS_FUNCS = (torch.flatten,)
_PASS_METHODS = ("flatten", "view", "reshape", "contiguous")
_AVG_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
METHODS = ("auto", "fx", "swap")


@dataclass
class QuantConfig:
    """Every linear-quantization default in one place."""

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True           # weights: one scale per output channel
    weight_symmetric: bool = True      # weights: Z = 0 (int8 codes in [-127, 127])
    act_symmetric: bool = False        # activations: asymmetric uint8 codes in [0, 255]
    weight_observer: str = "minmax"
    act_observer: str = "percentile"
    layer_bits: dict[str, int] = field(default_factory=dict)   # per-layer weight bits overrides
    # where the quantizers go: "fx" (a traced graph, static activation grids), "swap" (module swap,
    # any nn.Module: integer twins of Linear/Conv/Embedding, see swap.py), "auto" (fx where it traces)
    method: str = "auto"
    dynamic_activations: bool = True   # swap: linear inputs quantized per row at run time (act_bits;
                                       # a zero point per row unless act_symmetric)
    smooth_alpha: float | None = 0.5   # swap, given calibration inputs: SmoothQuant's migration strength
                                       # for those layers (Xiao et al. 2023; None: no smoothing)
    embeddings: bool = False           # swap: nn.Embedding tables too (one scale per row)
    exclude: list[str] = field(default_factory=list)   # swap: layer-name globs left in float

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantization method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.exclude, list) or not all(isinstance(g, str) for g in self.exclude):
            raise ConfigError(f"exclude must be a list of layer-name globs, got {self.exclude!r}")
        for name in ("dynamic_activations", "embeddings", "act_symmetric"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.smooth_alpha is not None and (isinstance(self.smooth_alpha, bool) or
                                              not isinstance(self.smooth_alpha, (int, float)) or
                                              not 0.0 <= self.smooth_alpha <= 1.0):
            raise ConfigError(f"smooth_alpha must be null or a number in [0, 1], got {self.smooth_alpha!r}")
        for name in (self.weight_observer, self.act_observer):
            if name not in OBSERVERS:
                raise ConfigError(f"unknown observer {name!r}; choose from {', '.join(OBSERVERS)}")
        for what, b in [("weight_bits", self.weight_bits), ("act_bits", self.act_bits),
                        *[(f"layer_bits[{k}]", v) for k, v in self.layer_bits.items()]]:
            if not isinstance(b, int) or not 2 <= b <= 8:
                raise ConfigError(f"{what} must be an integer in 2..8, got {b!r}")

    def weight_scheme(self, layer: str) -> QScheme:
        return QScheme(self.layer_bits.get(layer, self.weight_bits), self.weight_symmetric, signed=True,
                       per_channel=self.per_channel, axis=0)

    def act_scheme(self) -> QScheme:
        return QScheme(self.act_bits, self.act_symmetric, signed=self.act_symmetric)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown quantization settings {sorted(unknown)}")
        return cls(**d)


def node_kind(node: fx.Node, mods: dict[str, nn.Module]) -> str:
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "call_module":
        m = mods[node.target]
        if isinstance(m, QuantLayer):
            return "compute"
        if isinstance(m, (FakeQuant, SharedFakeQuant)):
            return "fq"
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, _PASS_MODULES):
            return "pass"
        if isinstance(m, _AVG_MODULES):
            return "avg"
    if node.op == "call_function":
        if node.target in _ADD_FUNCS:
            return "compute"
        if node.target in _RELU_FUNCS:
            return "relu"
        if node.target in _PASS_FUNCS:
            return "pass"
        if node.target is F.adaptive_avg_pool2d:
            return "avg"
    if node.op == "call_method":
        if node.target == "relu":
            return "relu"
        if node.target in _PASS_METHODS:
            return "pass"
    return "other"


def fused_relu(node: fx.Node, mods) -> fx.Node | None:
    """The ReLU that is a compute node's only user, if any."""
    users = list(node.users)
    if len(users) == 1 and node_kind(users[0], mods) == "relu":
        return users[0]
    return None


def quantizer_of(node: fx.Node, mods) -> FakeQuant | None:
    """The FakeQuant whose grid ``node``'s output lies on, following pass/relu/avg nodes back."""
    while isinstance(node, fx.Node):
        kind = node_kind(node, mods)
        if kind == "fq":
            m = mods[node.target]
            return m.source if isinstance(m, SharedFakeQuant) else m
        if kind not in ("pass", "relu", "avg"):
            return None
        node = node.args[0]
    return None


def _insert_after(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> fx.Node:
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(new, delete_user_cb=lambda u: u is not new)
    return new


def prepare(model: nn.Module, cfg: QuantConfig | None = None) -> fx.GraphModule:
    """A BN-folded, traced copy of ``model`` with quantizers (observing and quantizing off)."""
    cfg = cfg or QuantConfig()
    cfg.check()
    gm = fold_batchnorm(model)
    mods = dict(gm.named_modules())
    layers = {n for n, m in mods.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    unknown = set(cfg.layer_bits) - layers
    if unknown:
        raise ConfigError(f"layer_bits names no conv/linear layer: {sorted(unknown)}")
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(mods[node.target], (nn.Conv2d, nn.Linear)):
            layer = mods[node.target]
            wq = FakeQuant(cfg.weight_scheme(node.target), cfg.weight_observer, layer.weight.shape[0])
            parent, _, leaf = node.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, QuantLayer(layer, wq))
    mods = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        kind = node_kind(node, mods)
        if kind == "input" or kind == "compute":
            tail = (fused_relu(node, mods) or node) if kind == "compute" else node
            name = f"act_quant_{count}"
            count += 1
            _insert_after(gm, tail, name, FakeQuant(cfg.act_scheme(), cfg.act_observer))
            mods = dict(gm.named_modules())
        elif kind == "avg":
            src = quantizer_of(node.args[0], mods)
            if src is not None:
                _insert_after(gm, node, f"act_quant_{count}", SharedFakeQuant(src))
                count += 1
                mods = dict(gm.named_modules())
    for node in gm.graph.nodes:  # each layer learns its input's grid (for the int32 bias)
        if node_kind(node, mods) == "compute" and node.op == "call_module":
            object.__setattr__(mods[node.target], "input_fq", quantizer_of(node.args[0], mods))
    gm.recompile()
    return gm


def quant_layers(gm: nn.Module) -> dict[str, QuantLayer]:
    return {n: m for n, m in gm.named_modules() if isinstance(m, QuantLayer)}


def fake_quants(gm: nn.Module) -> dict[str, FakeQuant]:
    return {n: m for n, m in gm.named_modules() if isinstance(m, FakeQuant)}
