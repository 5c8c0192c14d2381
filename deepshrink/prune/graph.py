"""What is coupled: torch.fx traces a model into groups of channel dimensions that must be cut together.

Removing output channel c of a convolution also removes row c of its BatchNorm, input channel c
of every layer that reads the tensor, and channel c on the other side of every residual add
(Li et al. 2017, section 3.3; the dependency graph of Fang et al., "DepGraph", 2023). Each
tensor's channel dimension (dim 1: ``(N, C, ...)`` or ``(N, F)``) is described as a list of
segments ``(space, block)``: a concatenation joins several spaces, and a flatten turns channel c
of ``(N, C, H, W)`` into the block of columns ``[c*H*W, (c+1)*H*W)``. Elementwise ops between
two tensors merge their spaces (union-find); each merged space is one :class:`Group`.

Any op the analysis does not know freezes the spaces it touches (its inputs and output), as do
the model's inputs and outputs, so an unknown op never leads to a wrong cut, only to a smaller
one. A model torch.fx cannot trace raises ``ModelError`` (:mod:`deepshrink.tracing`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..tracing import trace_with_shapes

__all__ = ["Member", "Group", "build_groups"]

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
                 nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_FUNCS = {F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
               F.mish, torch.sigmoid, F.sigmoid, torch.tanh, F.dropout, F.max_pool2d, F.avg_pool2d,
               F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.clamp}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "contiguous", "clone"}
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, torch.add,
                torch.sub, torch.mul, torch.div, "add", "add_", "sub", "mul", "mul_", "div"}
_REDUCE = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}


@dataclass(frozen=True)
class Member:
    """One tensor dimension a group touches: weight dim 0 (``out``) or dim 1 (``in``) of ``module``.

    The group's channel c covers indices ``offset + c*block + j`` (0 <= j < block) of that dim.
    """

    module: str
    dim: str            # "out" (filters, BatchNorm and depthwise channels) or "in" (weight columns)
    offset: int = 0
    block: int = 1


@dataclass
class Group:
    """Channels that are kept or removed together, with every layer dimension they index."""

    id: int
    size: int
    members: list[Member] = field(default_factory=list)
    frozen: str | None = None                       # why it cannot be cut; None if it can
    modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    @property
    def prunable(self) -> bool:
        return self.frozen is None

    @property
    def name(self) -> str:
        """The first layer producing these channels (or the first member)."""
        outs = [m.module for m in self.members if m.dim == "out"]
        return (outs or [m.module for m in self.members] or [f"group{self.id}"])[0]

    def rows(self, member: Member, tensor: str = "weight") -> torch.Tensor:
        """The member's tensor, one row per channel: (size, block * other dims)."""
        t = getattr(self.modules[member.module], tensor).detach()
        span = slice(member.offset, member.offset + self.size * member.block)
        if member.dim == "out":
            return t[span].reshape(self.size, -1)                           # (C, block*rest)
        cols = t[:, span]                                                   # (O, C*block, ...)
        cols = cols.reshape(t.shape[0], self.size, member.block, *t.shape[2:])
        return cols.transpose(0, 1).reshape(self.size, -1)                  # (C, O*block*rest)


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Spaces:
    """Union-find over channel spaces, with their members and freeze reasons."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[Member]] = []
        self.frozen: dict[int, str] = {}

    def new(self, size: int, frozen: str | None = None) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.size.append(size)
        self.members.append([])
        if frozen:
            self.frozen[i] = frozen
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a

    def freeze(self, layout, reason: str) -> None:
        for space, _ in layout or ():
            self.frozen.setdefault(self.find(space), reason)


class _Analysis:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.mods = dict(gm.named_modules())
        self.s = _Spaces()
        self.env: dict[fx.Node, tuple] = {}         # node -> layout ((space, block), ...) or absent
        self.out_space: dict[str, int] = {}         # module -> its output space (shared modules)
        self.in_layout: dict[str, tuple] = {}

    # -- helpers
    def layout(self, arg):
        return self.env.get(arg) if isinstance(arg, fx.Node) else None

    def fresh(self, node, frozen: str | None = None):
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            self.env[node] = ((self.s.new(shape[1], frozen), 1),)

    def unknown(self, node, why: str) -> None:
        reason = f"{why} at node '{node.name}'"
        for a in node.all_input_nodes:
            self.s.freeze(self.layout(a), reason)
        self.fresh(node, reason)

    def unite(self, a, b) -> bool:
        if len(a) != len(b) or any(self.s.size[x] != self.s.size[y] or bx != by for (x, bx), (y, by) in zip(a, b)):
            return False
        for (x, _), (y, _) in zip(a, b):
            self.s.union(x, y)
        return True

    def add_members(self, name: str, dim: str, layout) -> None:
        offset = 0
        for space, block in layout:
            self.s.members[space].append(Member(name, dim, offset, block))
            offset += self.s.size[space] * block

    # -- node kinds
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.fresh(node, "the model's input")
            elif node.op == "get_attr":
                self.fresh(node, f"tensor '{node.target}' used directly in forward")
            elif node.op == "output":
                for a in node.all_input_nodes:
                    self.s.freeze(self.layout(a), "the model's output")
            elif node.op == "call_module":
                self.module(node, self.mods[node.target])
            else:
                self.function(node)

    def module(self, node, m: nn.Module) -> None:
        x, shape = self.layout(node.args[0] if node.args else None), _shape(node)
        name = node.target
        if x is None or shape is None:
            return self.unknown(node, f"module '{name}' ({type(m).__name__}) on a tensor without channels")
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            if m.groups == 1:
                return self.weighted(node, name, x, m.out_channels)
            if m.groups == m.in_channels == m.out_channels and all(b == 1 for _, b in x):
                return self.per_channel(node, name, x)             # depthwise: channel i -> filter i
            return self.unknown(node, f"grouped convolution '{name}'")
        if isinstance(m, nn.Linear):
            if len(_shape(node.args[0])) != 2:
                return self.unknown(node, f"linear '{name}' on a tensor of more than 2 dims")
            return self.weighted(node, name, x, m.out_features)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and len(shape) in (2, 4):
            return self.per_channel(node, name, x)
        if isinstance(m, _PASS_MODULES) and len(shape) >= 2 and shape[1] == _shape(node.args[0])[1]:
            self.env[node] = x
            return
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return self.flatten(node, x)
        return self.unknown(node, f"module '{name}' ({type(m).__name__}) not understood")

    def weighted(self, node, name: str, x, out: int) -> None:
        if name in self.out_space:                                 # shared layer, called again
            if not self.unite(self.in_layout[name], x):
                return self.unknown(node, f"layer '{name}' reused on another channel layout")
        else:
            self.add_members(name, "in", x)
            self.in_layout[name] = x
            self.out_space[name] = self.s.new(out)
            self.s.members[self.out_space[name]].append(Member(name, "out"))
        self.env[node] = ((self.out_space[name], 1),)

    def per_channel(self, node, name: str, x) -> None:
        """A layer with one set of weights per channel (BatchNorm, depthwise): its output is its input."""
        if name in self.in_layout:                                 # shared layer: both inputs coupled
            if not self.unite(self.in_layout[name], x):
                return self.unknown(node, f"layer '{name}' reused on another channel layout")
        else:
            self.add_members(name, "out", x)
            self.in_layout[name] = x
        self.env[node] = x

    def flatten(self, node, x) -> None:
        src = _shape(node.args[0])
        if len(src) == 2:
            self.env[node] = x
        elif len(src) >= 3:
            hw = int(torch.Size(src[2:]).numel())
            self.env[node] = tuple((space, block * hw) for space, block in x)
        else:
            self.unknown(node, "flatten of a 1-d tensor")

    def function(self, node) -> None:
        target = node.target
        shape = _shape(node)
        if shape is None:                                          # sizes, shapes: no tensor out
            return
        first = self.layout(node.args[0]) if node.args else None
        src = _shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if target in _ELEMENTWISE:
            return self.elementwise(node, shape)
        if target in (torch.cat, torch.concat):
            return self.concat(node, shape)
        if first is None or src is None:
            return self.unknown(node, f"op '{node.target}'")
        if (target in _PASS_FUNCS or target in _PASS_METHODS) and len(shape) == len(src) and shape[1] == src[1]:
            self.env[node] = first
            return
        if target in _REDUCE and len(shape) >= 2 and shape[:2] == src[:2] and self.reduces_space(node, len(src)):
            self.env[node] = first
            return
        if target in (torch.flatten, "flatten") and self.arg(node, 1, "start_dim", 0) == 1 \
                and self.arg(node, 2, "end_dim", -1) == -1:
            return self.flatten(node, first)
        if target in ("view", "reshape", torch.reshape) and len(src) >= 3 and len(shape) == 2 \
                and shape[0] == src[0] and self.dim1_is_free(node):
            return self.flatten(node, first)
        return self.unknown(node, f"op '{getattr(target, '__name__', target)}'")

    @staticmethod
    def arg(node, i: int, key: str, default):
        return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)

    @classmethod
    def reduces_space(cls, node, ndim: int) -> bool:
        """``x.mean((2, 3))``: only spatial dims are reduced, batch and channels stay."""
        dims = cls.arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and len(dims) > 0 and all(
            isinstance(d, int) and d % ndim >= 2 for d in dims)

    @staticmethod
    def dim1_is_free(node) -> bool:
        """``x.view(n, -1)``: the feature count is inferred, not written into the code."""
        dims = node.args[1:] if node.target != torch.reshape else ()
        if node.target == torch.reshape or (len(dims) == 1 and isinstance(dims[0], (tuple, list))):
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("shape", ())
        return len(dims) == 2 and dims[1] == -1

    def elementwise(self, node, shape) -> None:
        layouts = []
        for a in list(node.args) + list(node.kwargs.values()):
            if not isinstance(a, fx.Node) or _shape(a) is None:
                continue                                           # Python numbers
            s = _shape(a)
            if len(s) == len(shape) and len(s) >= 2 and s[1] == shape[1] and self.layout(a) is not None:
                layouts.append(self.layout(a))
            elif math.prod(s) == 1:
                continue
            elif len(s) == len(shape) and s[1] == 1:
                continue                                           # broadcast over channels
            else:
                return self.unknown(node, "elementwise op broadcasting over channels")
        if not layouts:
            return self.fresh(node)
        for other in layouts[1:]:
            if not self.unite(layouts[0], other):
                return self.unknown(node, "elementwise op joining different channel layouts")
        self.env[node] = layouts[0]

    def concat(self, node, shape) -> None:
        tensors = self.arg(node, 0, "tensors", ())
        dim = self.arg(node, 1, "dim", 0)
        if len(shape) < 2 or dim not in (1, 1 - len(shape)):
            return self.unknown(node, "concatenation along a dimension other than channels")
        parts = [self.layout(t) for t in tensors]
        if any(p is None for p in parts):
            return self.unknown(node, "concatenation of tensors without channels")
        self.env[node] = tuple(seg for p in parts for seg in p)

    # -- result
    def groups(self, model: nn.Module) -> list[Group]:
        roots: dict[int, Group] = {}
        mods = dict(model.named_modules())
        for space in range(len(self.s.parent)):
            root = self.s.find(space)
            g = roots.setdefault(root, Group(len(roots), self.s.size[root], modules=mods))
            g.members += self.s.members[space]
            if space in self.s.frozen and g.frozen is None:
                g.frozen = self.s.frozen[space]
        out = []
        for g in roots.values():
            if not g.members:
                continue
            if g.frozen is None and not any(m.dim == "out" and getattr(mods[m.module], "weight", None) is not None
                                            and mods[m.module].weight.dim() >= 2 for m in g.members):
                g.frozen = "no layer produces these channels"
            g.id = len(out)
            out.append(g)
        return out


def build_groups(model: nn.Module, example_input) -> list[Group]:
    """The model's channel groups, prunable or frozen (with the reason)."""
    analysis = _Analysis(trace_with_shapes(model, example_input,
                                           "its channel dependencies are unknown, so nothing is cut"))
    analysis.run()
    return analysis.groups(model)
