"""Which weights fine-grained pruning acts on, for any ``nn.Module``.

Han et al. 2015 ("Learning both Weights and Connections") prune the weight matrices of the
conv and fully connected layers. Here the default **targets** are the ``weight`` tensors of the
Linear and Conv layers (``is_linear_or_conv``: ``nn.Linear``, ``nn.Bilinear``, ``nn.Conv1d/2d/3d``
and the transposed convolutions, and any class whose name ends like a layer of that kind:
``AdderLinear``, ``AdderConv2d``, transformers' ``Conv1D`` -- recognised by name, so transformers
is never imported; the q/k/v projection matrices of ``nn.MultiheadAttention`` count as Linear
weights too) except the **output layer**:

* the output layer is the *last* Linear/Conv layer in ``named_modules()`` order, the layer a
  model defines last to produce its output (LeNet's ``fc3``, a ResNet's ``fc``,
  ``BertForSequenceClassification.classifier``, an LM head). It needs no example input and no
  tracing, so it works on every module. A bare ``transformers.BertModel`` has no classifier: its
  last Linear is ``pooler.dense``, which produces the pooled output, so it is left dense too;
* embeddings (``nn.Embedding``, a weight tied to one) are not Linear/Conv layers, and norms and
  biases are vectors: none of them is a default target;
* an early-exit model's heads (its ``exit_heads`` child, :mod:`deepshrink.exit_heads`) are neither
  targets nor the output layer: they are small, trained on the dense model's features, and
  fine-tuning the model does not train them (``include`` ``exit_heads.*`` to prune them anyway).

``include`` globs add any weight of two or more dimensions (an embedding, the output layer);
``exclude`` globs remove weights, and win over ``include``. A glob (``fnmatch``, case-sensitive,
``*`` crosses dots) selects a weight when it matches the parameter's name
(``encoder.layer.0.attention.self.query.weight``) or its module's name (``fc3``); a subtree is
``encoder.layer.0.*``. A glob that matches no such weight is an error naming it, so a typo never
silently prunes the defaults. Vectors (norm scales, biases) are never pruned element-wise.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Iterable

from torch import nn

from .errors import ConfigError
from .exit_heads import HEADS_ATTR

__all__ = ["is_linear_or_conv", "candidate_weights", "output_layer", "prunable_weights"]

_LAYER_TYPES = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_LAYER_NAME = re.compile(r"(Linear|Conv(\d[dD])?)$")  # AdderLinear, AdderConv2d, HF Conv1D
# nn.MultiheadAttention keeps its q/k/v projections as bare matrices (its out_proj is a Linear)
_PROJECTIONS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def is_linear_or_conv(module: nn.Module) -> bool:
    """A Linear or Conv layer: by type, or by a class name ending in Linear / Conv / Conv<k>d."""
    return isinstance(module, _LAYER_TYPES) or any(_LAYER_NAME.search(c.__name__) for c in type(module).__mro__)


def _owned_weights(model: nn.Module) -> list[tuple[str, str, nn.Parameter, bool]]:
    """(parameter name, module name, weight, every owner is Linear/Conv) for each ``weight`` of
    dim >= 2, in module order; a weight shared by several modules (tied) is listed once, under its
    first name, and counts as Linear/Conv only if all its owners are."""
    first: dict[int, list] = {}
    for name, module in model.named_modules():
        mha = isinstance(module, nn.MultiheadAttention)
        for attr in ("weight",) + (_PROJECTIONS if mha else ()):
            w = getattr(module, attr, None)
            if not isinstance(w, nn.Parameter) or w.dim() < 2:
                continue
            layer = mha or is_linear_or_conv(module)
            if id(w) in first:
                first[id(w)][3] = first[id(w)][3] and layer
            else:
                first[id(w)] = [f"{name}.{attr}" if name else attr, name, w, layer]
    return [tuple(v) for v in first.values()]


def candidate_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every weight ``include`` can add: each module's ``weight`` of two or more dimensions (and
    ``nn.MultiheadAttention``'s projection matrices)."""
    return {p: w for p, _, w, _ in _owned_weights(model)}


def _exit_head(name: str) -> bool:
    return name == HEADS_ATTR or name.startswith(HEADS_ATTR + ".")


def output_layer(model: nn.Module) -> str | None:
    """The module name of the last Linear/Conv layer in ``named_modules()`` order (None if none),
    exit heads left out."""
    last = None
    for name, module in model.named_modules():
        if _exit_head(name):
            continue
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() >= 2 and is_linear_or_conv(module):
            last = name
    return last


def _globs(globs: str | Iterable[str] | None, kind: str) -> tuple[str, ...]:
    out = (globs,) if isinstance(globs, str) else tuple(globs or ())
    for g in out:
        if not isinstance(g, str) or not g:
            raise ConfigError(f"{kind} globs must be non-empty strings, got {g!r}")
    return out


def _matches(glob: str, param: str, module: str) -> bool:
    return fnmatchcase(param, glob) or fnmatchcase(module, glob)


def prunable_weights(model: nn.Module, include: str | Iterable[str] | None = (),
                     exclude: str | Iterable[str] | None = ()) -> dict[str, nn.Parameter]:
    """{parameter name: weight} that fine-grained pruning acts on (see the module docstring):
    the Linear/Conv weights but the output layer's, plus ``include``, minus ``exclude``."""
    inc, exc = _globs(include, "include"), _globs(exclude, "exclude")
    owned = _owned_weights(model)
    for kind, globs in (("include", inc), ("exclude", exc)):
        for g in globs:
            if not any(_matches(g, p, m) for p, m, _, _ in owned):
                names = [p for p, _, _, _ in owned]
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                raise ConfigError(f"{kind} glob {g!r} matches no weight of the model (weights of 2+ "
                                  f"dimensions, by parameter or module name): {shown or 'none'}")
    last = output_layer(model)
    last_w = None if last is None else model.get_submodule(last).weight  # by identity: it may be tied
    out = {}
    for p, m, w, layer in owned:
        chosen = (layer and w is not last_w and not _exit_head(m)) or any(_matches(g, p, m) for g in inc)
        if chosen and not any(_matches(g, p, m) for g in exc):
            out[p] = w
    return out
