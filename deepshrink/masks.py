"""Pruning masks kept as buffers beside the weights (``<param>_mask``, bool; :mod:`deepshrink.names`).

The mask travels in the state dict, so a checkpoint describes its own sparsity and masks
survive save/load. ``apply_masks`` zeroes masked weights; :class:`MaskCallback` does it after
every optimizer step, so fine-tuning never revives a pruned weight; ``squash`` bakes the
masks into the weights and drops the buffers; ``remove`` is the same under the name
``torch.nn.utils.prune.remove`` users know.

A masked parameter also holds its zeros under training outside deepshrink (any optimizer, any
loop), as ``torch.nn.utils.prune`` does with its forward pre-hook. :func:`set_mask` and loading a
file (:func:`hold_masks`) attach, never twice:

* a gradient hook that multiplies the gradient by the mask: a pruned weight gets a zero gradient,
  so SGD (with momentum and weight decay), Adam and AdamW leave it exactly zero;
* a forward pre-hook on the owning module that re-applies the mask in place (through ``.data``,
  so no autograd version counter moves), for code that writes the weights directly; only in a
  training forward (the module in train mode, grad enabled), so inference (eval mode or
  ``torch.no_grad``, ``profile --latency``) runs no mask operation and costs what the plain
  model does. The gradient hook alone keeps the zeros under optimizers.

Re-pruning replaces the mask buffer, never stacks hooks: both hooks read the mask when they
run. The pre-hook also re-attaches the gradient hook to a parameter that lacks it (a
``copy.deepcopy``, an unpickled model, a layer whose weight was replaced by a channel cut), in any
forward with grad enabled (eval-mode training included). It
does nothing under torch.jit (tracing and scripting), torch.fx, ONNX export and
``torch.compile``/``torch.export``, so no graph records it, and does not re-apply the masks under
a Python dispatch mode (the profiler's op recorder, a FLOP counter), so no count includes them.
The state dict holds no hooks; ``squash``/``remove`` drop the hooks with the masks.

``sparsity`` and ``layer_sparsities`` count over the masked weights (what was pruned), or the
default targets of :mod:`deepshrink.targets` when nothing is masked: never over weights that no
pruning would touch (embeddings, the output layer), which would dilute the figure.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils import _python_dispatch

from .errors import ConfigError
from .names import MASK_SUFFIX
from .targets import prunable_weights  # which weights are pruned by default: deepshrink/targets.py

__all__ = [
    "MASK_SUFFIX",
    "prunable_weights",
    "target_weights",
    "set_mask",
    "get_masks",
    "apply_masks",
    "hold_masks",
    "squash",
    "remove",
    "MaskCallback",
    "sparsity",
    "layer_sparsities",
]


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = param_name.rpartition(".")
    try:
        return (model.get_submodule(mod_name) if mod_name else model), attr
    except AttributeError:
        raise ConfigError(f"no layer named {mod_name!r} in the model") from None


def set_mask(model: nn.Module, param_name: str, mask: torch.Tensor) -> None:
    """Attach (or replace) the mask of one parameter and zero its pruned weights."""
    module, attr = _owner(model, param_name)
    w = getattr(module, attr, None)
    if not isinstance(w, torch.Tensor):
        raise ConfigError(f"layer {param_name!r} has no tensor {attr!r}")
    if mask.shape != w.shape:
        raise ConfigError(f"mask for {param_name!r} has shape {tuple(mask.shape)}, weight {tuple(w.shape)}")
    mask = mask.to(dtype=torch.bool, device=w.device)
    module.register_buffer(attr + MASK_SUFFIX, mask)
    with torch.no_grad():
        w.mul_(mask)
    _attach(module)


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask} for every masked parameter."""
    out = {}
    for name, buf in model.named_buffers():
        if name.endswith(MASK_SUFFIX):
            out[name[: -len(MASK_SUFFIX)]] = buf
    return out


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    for name, mask in get_masks(model).items():
        module, attr = _owner(model, name)
        getattr(module, attr).mul_(mask)


class _MaskGrad:
    """Gradient hook of a masked parameter: the gradient times the mask its module holds now."""

    __torch_unserializable__ = True  # never pickled with a tensor (a Parameter drops its hooks)

    def __init__(self, module: nn.Module, attr: str):
        self.module, self.attr = weakref.ref(module), attr

    def __call__(self, grad: torch.Tensor) -> torch.Tensor | None:
        module = self.module()
        mask = getattr(module, self.attr + MASK_SUFFIX, None) if module is not None else None
        if not isinstance(mask, torch.Tensor) or mask.shape != grad.shape:
            return None  # mask gone (squashed) or being resized: leave the gradient alone
        return grad * mask


def _masked_params(module: nn.Module):
    """(attr, parameter, mask) for each leaf parameter of ``module`` with a mask of its shape."""
    for name, mask in module.named_buffers(recurse=False):
        if not name.endswith(MASK_SUFFIX):
            continue
        attr = name[: -len(MASK_SUFFIX)]
        p = getattr(module, attr, None)
        if isinstance(p, nn.Parameter) and p.is_leaf and p.shape == mask.shape:
            yield attr, p, mask


def _own_grad_hooks(p: torch.Tensor, module: nn.Module, attr: str) -> list:
    hooks = p._backward_hooks or {}
    return [k for k, h in hooks.items() if isinstance(h, _MaskGrad) and h.module() is module and h.attr == attr]


def _hook_grads(module: nn.Module) -> None:
    for attr, p, _ in _masked_params(module):
        if p.requires_grad and not _own_grad_hooks(p, module, attr):
            p.register_hook(_MaskGrad(module, attr))


def _exporting() -> bool:
    """Whether the forward runs under a tracer, compiler or exporter (nothing may be recorded then)."""
    compiling = [getattr(torch.compiler, f, None) for f in ("is_compiling", "is_exporting")]  # torch >= 2.3 / 2.7
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or any(f() for f in compiling if f)
                or torch.fx._symbolic_trace.is_fx_symbolic_tracing())


def _observed() -> bool:
    """Whether a Python dispatch mode sees every op now (a profiler, a FLOP counter, fake tensors):
    the re-applied masks would show up in what it counts."""
    current = getattr(_python_dispatch, "_get_current_dispatch_mode", None)
    return current is not None and current() is not None


@torch.jit.unused
def _hold(module: nn.Module) -> None:
    if not torch.is_grad_enabled() or _exporting():
        return  # no gradient to hook, nothing a graph may record
    _hook_grads(module)
    if not module.training or _observed():
        return  # inference: the weights are left alone (a direct write is masked at the next training forward)
    for _, p, mask in _masked_params(module):
        p.data.mul_(mask)  # .data: bumps no version counter, so a graph built before stays valid


def _mask_pre_hook(module: nn.Module, args: tuple[torch.Tensor]) -> None:
    """Forward pre-hook of a module with masked parameters (typed so torch.jit.script compiles it
    to nothing): re-apply the masks and make sure each masked parameter has its gradient hook."""
    if not torch.jit.is_scripting():
        _hold(module)


def _attach(module: nn.Module) -> None:
    """The pre-hook (once per module) and the gradient hooks (once per parameter) of ``module``."""
    if not any(True for _ in _masked_params(module)):
        return
    if not any(h is _mask_pre_hook for h in module._forward_pre_hooks.values()):
        module.register_forward_pre_hook(_mask_pre_hook)
    _hook_grads(module)


def _detach(module: nn.Module) -> None:
    """Drop the mask hooks of ``module`` (its pre-hook, its parameters' gradient hooks)."""
    for attr, p, _ in _masked_params(module):
        for k in _own_grad_hooks(p, module, attr):
            del p._backward_hooks[k]
    for k in [k for k, h in module._forward_pre_hooks.items() if h is _mask_pre_hook]:
        for d in (module._forward_pre_hooks, getattr(module, "_forward_pre_hooks_with_kwargs", {}),
                  getattr(module, "_forward_pre_hooks_always_called", {})):
            d.pop(k, None)


def hold_masks(model: nn.Module) -> nn.Module:
    """Attach the hooks that keep every masked weight at zero under any optimizer (see the module
    docstring); idempotent. :func:`set_mask` does it; a loaded model gets it from its reader."""
    for module in model.modules():
        _attach(module)
    return model


def squash(model: nn.Module) -> nn.Module:
    """Bake the masks into the weights and remove the mask buffers and their hooks: a plain model."""
    apply_masks(model)
    for name in list(get_masks(model)):
        module, attr = _owner(model, name)
        _detach(module)
        delattr(module, attr + MASK_SUFFIX)
    for module in model.modules():
        _detach(module)
    return model


def remove(model: nn.Module, name: str | None = None) -> nn.Module:
    """:func:`squash` under the name ``torch.nn.utils.prune.remove`` users know: bake the masks in,
    drop the buffers and hooks; the zeros then stay only until an optimizer moves them.

    ``name`` squashes one parameter only (``remove(model.fc1, "weight")``, as torch's
    ``remove(module, name)``); it must be masked."""
    if name is None:
        return squash(model)
    module, attr = _owner(model, name)
    mask = getattr(module, attr + MASK_SUFFIX, None)
    if not isinstance(mask, torch.Tensor):
        raise ConfigError(f"parameter {name!r} has no mask to remove (masked: {', '.join(get_masks(model)) or 'none'})")
    with torch.no_grad():
        getattr(module, attr).mul_(mask)
    for k in _own_grad_hooks(getattr(module, attr), module, attr):
        del getattr(module, attr)._backward_hooks[k]
    delattr(module, attr + MASK_SUFFIX)
    if not any(True for _ in _masked_params(module)):
        _detach(module)
    return model


class MaskCallback:
    """``fit`` callback: re-apply the masks after every optimizer step."""

    def __call__(self, model: nn.Module, info=None) -> None:
        apply_masks(model)


def target_weights(model: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """The pruning targets a figure is computed over: the named weights; else the masked ones (what
    was pruned, whatever the include/exclude globs were); else the default targets."""
    if not names:
        names = list(get_masks(model)) or list(prunable_weights(model))
    out = {}
    for n in names:
        module, attr = _owner(model, n)
        w = getattr(module, attr, None)
        if not isinstance(w, torch.Tensor):
            raise ConfigError(f"layer {n!r} has no tensor {attr!r}")
        out[n] = w
    return out


def sparsity(model: nn.Module, names=None) -> float:
    """Fraction of zeros over the pruning targets (:func:`target_weights`) or the named weights."""
    chosen = list(target_weights(model, names).values())
    total = sum(int(w.numel()) for w in chosen)
    zeros = sum(int(w.numel() - torch.count_nonzero(w)) for w in chosen)
    return zeros / total if total else 0.0


def layer_sparsities(model: nn.Module, names=None) -> dict[str, float]:
    """{weight name: fraction of zeros} over the pruning targets (:func:`target_weights`) or the named weights."""
    return {n: 1.0 - int(torch.count_nonzero(w)) / w.numel() for n, w in target_weights(model, names).items()}
