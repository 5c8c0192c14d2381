"""The exit plan: plain data saying where a model's exit heads sit, how each is built, and when a
sample leaves at it (BranchyNet, Teerapittayanon et al. 2016; MSDNet, Huang et al. 2018).

``ModelInfo.extra["exits"]``::

    {"heads": [{"layer": "layer1", "in_shape": [16, 28, 28], "depth": 3, "width": 16, "num_classes": 10}, ...],
     "policy": "max_softmax" | "entropy" | "learned" | null,
     "thresholds": [0.93, null, ...],          # one per head; null: the exit is off (its head never runs)
     "gates": [{"weight": [...], "bias": b, "mean": [...], "std": [...]} | null, ...],   # learned policy only
     "stage_macs": [...], "notes": {...}}      # what the costs were when it was written (informational)

A head turns the output of its layer, ``in_shape`` per sample, into class logits: ``depth`` blocks
of 3x3 conv (stride 2 while the map is larger than 4x4), BatchNorm and ReLU, ``width`` channels,
then global average pooling and one linear layer; a flat feature gets ``depth`` Linear+ReLU layers
of ``width`` units, then the linear classifier. A head's score passes its threshold when
``score >= threshold`` (:mod:`deepshrink.exits.policies` defines the scores).

This is the model-file layer's part of early exit (like :mod:`deepshrink.channel_plan` for channel
pruning): the loader builds the heads from the plan and registers them on the model as the child
``exit_heads`` (an ``nn.ModuleList``), so their tensors load with the model's, under the keys
``exit_heads.<i>.*``, and no code is ever imported. Running them (hooks that stop the forward
pass) is :mod:`deepshrink.exits`. Every field read from a file is checked here; a bad one is a
FormatError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from .errors import FormatError, ModelError

__all__ = ["EXITS_KEY", "HEADS_ATTR", "POLICY_NAMES", "GATE_FEATURES", "HeadSpec", "Gate", "ExitPlan",
           "build_head", "attach_heads"]

EXITS_KEY = "exits"                  # ModelInfo.extra[EXITS_KEY]
HEADS_ATTR = "exit_heads"            # the model's child holding the heads (state keys exit_heads.<i>.*)
POLICY_NAMES = ("max_softmax", "entropy", "learned")
GATE_FEATURES = 4                    # inputs of a learned decision function (exits.policies.gate_features)
MAX_HEADS = 64
MAX_DEPTH = 8
MAX_WIDTH = 1 << 14
MAX_CLASSES = 100_000
MAX_FEATURE = 1 << 26                # values per sample a head may take
DOWNSAMPLE_ABOVE = 4                 # a head's conv strides 2 while the map's side is larger than this


def _fail(where: str, name: str, what: str, value) -> FormatError:
    shown = repr(value)
    return FormatError(f"{where}: metadata field 'extra.exits.{name}' {what}, got {shown[:80]}")


def _int(raw: dict, key: str, lo: int, hi: int, where: str, name: str) -> int:
    v = raw.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(where, f"{name}.{key}", f"must be a whole number in [{lo}, {hi}]", v)
    return v


def _floats(v, n: int | None, where: str, name: str) -> list[float]:
    ok = isinstance(v, list) and (n is None or len(v) == n) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok:
        raise _fail(where, name, f"must be a list of {n if n is not None else ''} finite numbers".replace("  ", " "), v)
    return [float(x) for x in v]


@dataclass
class HeadSpec:
    """One exit head: where it reads (``layer``'s output, ``in_shape`` per sample) and its size."""

    layer: str
    in_shape: list[int]
    num_classes: int
    depth: int = 3
    width: int = 32

    def to_dict(self) -> dict:
        return {"layer": self.layer, "in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "depth": self.depth, "width": self.width}

    @classmethod
    def from_dict(cls, raw, where: str, name: str) -> "HeadSpec":
        if not isinstance(raw, dict):
            raise _fail(where, name, "must be an object", raw)
        layer = raw.get("layer")
        if not isinstance(layer, str) or not 0 < len(layer) <= 1000:
            raise _fail(where, f"{name}.layer", "must be a module name", layer)
        shape = raw.get("in_shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
                or not all(type(v) is int and v > 0 for v in shape) or math.prod(shape) > MAX_FEATURE):
            raise _fail(where, f"{name}.in_shape", f"must be 1 to 3 positive sizes, at most {MAX_FEATURE} values",
                        shape)
        return cls(layer, list(shape), _int(raw, "num_classes", 1, MAX_CLASSES, where, name),
                   _int(raw, "depth", 0, MAX_DEPTH, where, name), _int(raw, "width", 1, MAX_WIDTH, where, name))


@dataclass
class Gate:
    """A learned decision function: ``sigmoid(((phi - mean) / std) . weight + bias)`` on the
    head's logit features ``phi`` (:func:`deepshrink.exits.policies.gate_features`)."""

    weight: list[float]
    bias: float
    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict:
        return {"weight": list(self.weight), "bias": float(self.bias), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw, where: str, name: str) -> "Gate":
        if not isinstance(raw, dict):
            raise _fail(where, name, "must be an object or null", raw)
        std = _floats(raw.get("std"), GATE_FEATURES, where, f"{name}.std")
        if any(s <= 0 for s in std):
            raise _fail(where, f"{name}.std", "must be positive", std)
        return cls(_floats(raw.get("weight"), GATE_FEATURES, where, f"{name}.weight"),
                   _floats([raw.get("bias")], 1, where, f"{name}.bias")[0],
                   _floats(raw.get("mean"), GATE_FEATURES, where, f"{name}.mean"), std)


@dataclass
class ExitPlan:
    """Where the exits are and when a sample leaves: heads, policy, thresholds, gates."""

    heads: list[HeadSpec]
    policy: str | None = None                     # None: no policy chosen yet (heads only)
    thresholds: list[float | None] = field(default_factory=list)   # one per head; None: the exit is off
    gates: list[Gate | None] = field(default_factory=list)         # learned policy: one per head
    stage_macs: list[int] = field(default_factory=list)            # informational
    notes: dict = field(default_factory=dict)                      # informational (search settings, lambda)

    @property
    def layers(self) -> list[str]:
        return [h.layer for h in self.heads]

    def enabled(self) -> list[bool]:
        """Which exits run: all of them until a policy is chosen, then those with a threshold."""
        if self.policy is None:
            return [True] * len(self.heads)
        return [t is not None for t in self.thresholds]

    def to_dict(self) -> dict:
        return {"heads": [h.to_dict() for h in self.heads], "policy": self.policy,
                "thresholds": [None if t is None else float(t) for t in self.thresholds],
                "gates": [None if g is None else g.to_dict() for g in self.gates],
                "stage_macs": [int(v) for v in self.stage_macs], "notes": dict(self.notes)}

    @classmethod
    def from_dict(cls, raw, where: str = "exit plan") -> "ExitPlan":
        if not isinstance(raw, dict):
            raise _fail(where, "", "must be an object", raw)
        heads = raw.get("heads")
        if not isinstance(heads, list) or not 1 <= len(heads) <= MAX_HEADS:
            raise _fail(where, "heads", f"must be a list of 1 to {MAX_HEADS} heads", heads)
        specs = [HeadSpec.from_dict(h, where, f"heads[{i}]") for i, h in enumerate(heads)]
        if len({s.layer for s in specs}) != len(specs):
            raise _fail(where, "heads", "names a layer twice", [s.layer for s in specs])
        policy = raw.get("policy")
        if policy is not None and policy not in POLICY_NAMES:
            raise _fail(where, "policy", f"must be null or one of {list(POLICY_NAMES)}", policy)
        n = len(specs)
        thresholds = raw.get("thresholds", [])
        if policy is None and thresholds in ([], None):
            thresholds = []
        elif not isinstance(thresholds, list) or len(thresholds) != n or not all(
                t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t))
                for t in thresholds):
            raise _fail(where, "thresholds", f"must be a list of {n} finite numbers or nulls", thresholds)
        gates_raw = raw.get("gates", [])
        if policy == "learned":
            if not isinstance(gates_raw, list) or len(gates_raw) != n:
                raise _fail(where, "gates", f"must be a list of {n} gates (policy 'learned')", gates_raw)
            gates = [None if g is None else Gate.from_dict(g, where, f"gates[{i}]") for i, g in enumerate(gates_raw)]
            missing = [i for i, (g, t) in enumerate(zip(gates, thresholds)) if t is not None and g is None]
            if missing:
                raise _fail(where, "gates", f"has no gate for the enabled exit(s) {missing}", gates_raw)
        else:
            gates = []
        macs = raw.get("stage_macs", [])
        if not isinstance(macs, list) or not all(type(v) is int and v >= 0 for v in macs):
            raise _fail(where, "stage_macs", "must be a list of whole numbers", macs)
        notes = raw.get("notes", {})
        if not isinstance(notes, dict):
            raise _fail(where, "notes", "must be an object", notes)
        return cls(specs, policy, [None if t is None else float(t) for t in thresholds], gates, list(macs), notes)


def build_head(spec: HeadSpec) -> nn.Sequential:
    """The head ``spec`` describes, freshly initialised: (N, *in_shape) -> (N, num_classes)."""
    layers: list[nn.Module] = []
    if len(spec.in_shape) == 3:
        c, side = spec.in_shape[0], max(spec.in_shape[1:])
        for _ in range(spec.depth):
            stride = 2 if side > DOWNSAMPLE_ABOVE else 1
            layers += [nn.Conv2d(c, spec.width, 3, stride, 1, bias=False), nn.BatchNorm2d(spec.width),
                       nn.ReLU(inplace=True)]
            c, side = spec.width, (side + 1) // 2 if stride == 2 else side   # 3x3, padding 1
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    else:
        c = math.prod(spec.in_shape)
        layers.append(nn.Flatten())
        for _ in range(spec.depth):
            layers += [nn.Linear(c, spec.width), nn.ReLU(inplace=True)]
            c = spec.width
    layers.append(nn.Linear(c, spec.num_classes))
    return nn.Sequential(*layers)


def attach_heads(model: nn.Module, plan: ExitPlan, where: str = "model") -> nn.Module:
    """Register fresh heads for ``plan`` on ``model`` as its child ``exit_heads`` (replacing any), in
    the model's mode; every head's layer must be a module of ``model``. Returns ``model``."""
    names = dict(model.named_modules())
    for spec in plan.heads:
        if spec.layer not in names or spec.layer == "" or spec.layer.split(".")[0] == HEADS_ATTR:
            raise ModelError(f"{where}: exit layer {spec.layer!r} is not a module of the model")
    if hasattr(model, HEADS_ATTR) and not isinstance(getattr(model, HEADS_ATTR), nn.ModuleList):
        raise ModelError(f"{where}: the model already has an attribute {HEADS_ATTR!r} of its own")
    model.add_module(HEADS_ATTR, nn.ModuleList(build_head(s) for s in plan.heads).train(model.training))
    return model
