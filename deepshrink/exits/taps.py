"""Taps on a model's module structure: forward hooks at named layers that read, replace or stop.

No graph tracing, so this works on any ``nn.Module`` whose forward fx cannot trace (data-dependent
control flow, a Hugging Face model): a hook on layer ``L`` sees ``L``'s output as it is produced,
may return a replacement (a subset of the batch's rows, a given tensor) that the rest of the
forward pass then runs on, and may raise :class:`StopForward` to end the pass there (the caller
catches it). :func:`check_cut` makes sure that the rest of the pass depends on the batch's rows at
the layer alone, which running later stages on a subset of the rows requires: a skip connection
that jumps over the layer (a residual add taking a tensor from before it) would fail there, loudly,
instead of mixing rows.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import ModelError, first_line

__all__ = ["StopForward", "module_at", "tapped", "run_until", "layer_outputs", "check_cut", "unwrap"]


class StopForward(Exception):
    """Raised by a tap to end the forward pass at its layer (caught by whoever ran the model)."""


def module_at(model: nn.Module, name: str, where: str = "model") -> nn.Module:
    """``model``'s submodule ``name``; an unknown name is one ModelError naming it."""
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        top = [n for n, _ in model.named_children()]
        raise ModelError(f"{where}: no layer {name!r} in the model (its top-level layers: {', '.join(top)})") from None


def unwrap(out, layer: str) -> torch.Tensor:
    """A layer's output as one tensor (exits read single-tensor outputs only)."""
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"exit layer {layer!r} outputs {type(out).__name__}, not one tensor; put the exit at "
                         "a layer that outputs a tensor")
    return out


@contextlib.contextmanager
def tapped(model: nn.Module, layers: list[str], fn: Callable[[int, torch.Tensor], torch.Tensor | None],
           where: str = "model") -> Iterator[None]:
    """While inside, each forward of ``model`` calls ``fn(i, output)`` when ``layers[i]`` has run;
    a tensor ``fn`` returns replaces the output, :class:`StopForward` ends the pass."""
    handles = []
    try:
        for i, name in enumerate(layers):
            handles.append(module_at(model, name, where).register_forward_hook(
                lambda m, args, out, i=i, name=name: fn(i, unwrap(out, name))))
        yield
    finally:
        for h in handles:
            h.remove()


def run_until(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``layer``'s output for input ``x``; the forward pass stops there."""
    got: list[torch.Tensor] = []

    def stop(i, out):
        got.append(out)
        raise StopForward

    with tapped(model, [layer], stop):
        try:
            model(x)
        except StopForward:
            return got[0]
    raise ModelError(f"exit layer {layer!r} did not run in the model's forward pass")


def layer_outputs(model: nn.Module, x: torch.Tensor, layers: list[str], *, full: bool = True,
                  clone: bool = True) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """(the outputs of ``layers`` for ``x``, the model's output or None). ``full`` False stops after
    the last of them; ``clone`` copies each (a later in-place op, a ReLU(inplace=True), would change it)."""
    got: dict[int, torch.Tensor] = {}

    def keep(i, out):
        got[i] = out.clone() if clone else out
        if not full and len(got) == len(layers):
            raise StopForward

    final = None
    with tapped(model, layers, keep):
        try:
            final = model(x)
        except StopForward:
            pass
    missing = [layers[i] for i in range(len(layers)) if i not in got]
    if missing:
        raise ModelError(f"exit layer(s) {missing} did not run in the model's forward pass")
    return [got[i] for i in range(len(layers))], final


@torch.no_grad()
def check_cut(model: nn.Module, layer: str, example: torch.Tensor, where: str = "model") -> None:
    """Whether the forward pass after ``layer`` runs row by row: on a batch of two different
    inputs, dropping the first row at ``layer`` must leave the second row's output as it was. A
    model whose later layers read a tensor from before ``layer`` (a skip connection over it) or
    mix rows fails here with a ModelError naming the layer."""
    was = model.training
    model.eval()
    try:
        first = example[:1]
        other = first.flip(-1) + 0.5 * torch.randn_like(first) if first.is_floating_point() else first.roll(1, -1)
        x = torch.cat([first, other])  # (2, ...): two different samples
        whole = model(x)
        if not isinstance(whole, torch.Tensor) or whole.shape[:1] != (2,):
            raise ModelError(f"{where}: early exit needs a model that returns one (N, classes) tensor of logits")

        def drop_first(i, out):
            return out[1:]

        try:
            with tapped(model, [layer], drop_first, where):
                part = model(x)
        except ModelError:
            raise
        except Exception as exc:  # shape errors from a skip connection over the layer
            raise ModelError(f"{where}: the layers after {layer!r} do not run on a subset of the batch "
                             f"({type(exc).__name__}: {first_line(exc)}); put the exit at the output of a "
                             "whole block, where nothing jumps over it") from None
        if part.shape[:1] != (1,) or not torch.allclose(part[0], whole[1], rtol=1e-4, atol=1e-5):
            raise ModelError(f"{where}: the layers after {layer!r} mix the batch's rows or read a tensor from "
                             "before it; put the exit at the output of a whole block")
    finally:
        model.train(was)
