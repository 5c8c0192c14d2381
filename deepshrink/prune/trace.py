"""Tracing for the dependency analysis: torch.fx symbolic trace plus recorded tensor shapes.

``trace_model`` turns any fx-traceable ``nn.Module`` into a ``GraphModule`` whose nodes carry
their output shapes (``node.meta["tensor_meta"]``, from one eval-mode forward of the example
input). A model fx cannot trace (data-dependent control flow, unsupported Python) raises
:class:`ModelError` naming the module being traced and the last node recorded, so the caller
never guesses at dependencies it could not see.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ModelError

__all__ = ["trace_model"]


class _Tracer(fx.Tracer):
    """Remembers which module was being traced when tracing fails."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(f"'{self.path_of_module(m)}' ({type(m).__name__})")
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()


def trace_model(model: nn.Module, example_input) -> fx.GraphModule:
    """fx-trace ``model`` and record every node's output shape (eval mode, no gradients)."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = f"in module {tracer.failed_in[-1]}" if tracer.failed_in else "in the top-level forward"
        nodes = list(tracer.graph.nodes) if getattr(tracer, "graph", None) is not None else []
        after = f", at node '{nodes[-1].name}'" if nodes else ""
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot trace the model with torch.fx {where}{after}: {msg}; "
                         "its channel dependencies are unknown, so nothing is cut") from None
    gm = fx.GraphModule(model, graph)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        raise ModelError(f"the example input {[tuple(a.shape) for a in args]} does not fit the model "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        for m, was in modes:
            m.training = was
    return gm
