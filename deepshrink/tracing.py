"""torch.fx tracing: one entry point for every graph pass, and one error when fx cannot follow a model.

``trace(model)`` is ``fx.symbolic_trace`` with a tracer that remembers which submodule's
``forward`` it was inside. A model fx cannot trace (data-dependent control flow such as
``if x.sum() > 0``, unsupported Python) raises :class:`ModelError` naming that module (its path
and class) and the last node recorded, so no caller guesses at a graph it could not see.

``trace_with_shapes(model, example_input)`` also records every node's output shape and dtype in
``node.meta["tensor_meta"]`` (torch.fx's ``ShapeProp``: one eval-mode forward of the example
input without gradients; each module's training mode is restored afterwards).
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import ModelError, first_line

__all__ = ["trace", "trace_with_shapes"]


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


def trace(model: nn.Module, consequence: str = "") -> fx.GraphModule:
    """``model`` as an fx ``GraphModule`` (named after its class, as ``fx.symbolic_trace`` does).

    ``consequence`` (e.g. "so nothing is cut") ends the error message when tracing fails.
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        where = f"in module {tracer.failed_in[-1]}" if tracer.failed_in else "in its top-level forward"
        nodes = list(tracer.graph.nodes) if getattr(tracer, "graph", None) is not None else []
        after = f", at node '{nodes[-1].name}'" if nodes else ""
        tail = f"; {consequence}" if consequence else ""
        raise ModelError(f"cannot trace {type(model).__name__} with torch.fx {where}{after} "
                         f"(data-dependent control flow?): {first_line(exc)}{tail}") from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def trace_with_shapes(model: nn.Module, example_input, consequence: str = "") -> fx.GraphModule:
    """:func:`trace`, then every node's output shape in ``node.meta["tensor_meta"]``.

    ``example_input`` is one tensor or a tuple of the forward's positional arguments.
    """
    gm = trace(model, consequence)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        cause = exc.__cause__ or exc  # ShapeProp wraps the module's own error in a RuntimeError
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
        raise ModelError(f"the example input {shapes} does not fit "
                         f"{type(model).__name__} ({type(cause).__name__}: {first_line(cause)})") from None
    finally:
        for m, was in modes:
            m.training = was
    return gm
