"""The convolution-algorithm table of a model: for every ``nn.Conv2d`` (found by one forward with
hooks, which gives each its real input), each algorithm of :mod:`.algorithms` run on that input
with the layer's weights: supported or why not, the max abs error against ``F.conv2d``, the
workspace its formula predicts and the one measured (:func:`~.measure.peak_bytes` minus the
output's bytes), and its median time; ``F.conv2d`` itself is timed and measured alongside.

A layer with ``padding_mode`` other than zeros, or a string padding whose two sides differ
("same" with an even kernel), is given its input padded first (as ``nn.Conv2d`` does) and
convolved with padding 0; its note says so. An algorithm whose predicted workspace is above
:data:`MAX_WORKSPACE_BYTES` is not run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .algorithms import ALGORITHMS, NAMES
from .measure import interleaved_median_ms, peak_bytes
from .shapes import ConvShape, conv_shape

__all__ = ["AlgoRow", "LayerTable", "conv_inputs", "layer_args", "measure_layer", "conv_table", "summarize",
           "MAX_WORKSPACE_BYTES", "COLUMN_MEANS"]

MAX_WORKSPACE_BYTES = 1 << 30       # 1 GiB: an algorithm predicted to need more is not run

COLUMN_MEANS = {
    "max_abs_error": "max |y - F.conv2d(x, w, b)| over the layer's output, on the layer's input in the forward pass",
    "workspace_predicted": "bytes beyond input, weights and output, from the algorithm's formula (a pure function "
                           "of the layer's shape)",
    "workspace_measured": "peak bytes held by the call's own allocations through torch's CPU allocator (the "
                          "profiler's memory events), minus the output's bytes",
    "time_ms": "median wall time of one call, CPU, after one warm-up; F.conv2d and the algorithms timed in turn "
               "(A B C ... A B C ...)",
}


@dataclass
class AlgoRow:
    algorithm: str
    supported: bool
    reason: str = ""                          # why not run (unsupported, or over the workspace cap)
    max_abs_error: float | None = None
    workspace_predicted: int | None = None
    workspace_measured: int | None = None
    time_ms: float | None = None


@dataclass
class LayerTable:
    name: str
    shape: ConvShape
    reference_ms: float                        # F.conv2d's median time
    reference_workspace: int                   # F.conv2d's measured bytes beyond its output
    rows: list[AlgoRow] = field(default_factory=list)
    note: str = ""

    def fastest(self) -> str | None:
        """The supported algorithm with the smallest median time."""
        timed = [r for r in self.rows if r.time_ms is not None]
        return min(timed, key=lambda r: r.time_ms).algorithm if timed else None

    def to_dict(self) -> dict:
        return {"name": self.name, **self.shape.to_dict(), "macs": self.shape.macs, "note": self.note,
                "reference": {"algorithm": "F.conv2d", "time_ms": self.reference_ms,
                              "workspace_measured": self.reference_workspace},
                "fastest": self.fastest(), "rows": [asdict(r) for r in self.rows]}


def conv_inputs(model: nn.Module, x) -> list[tuple[str, nn.Conv2d, torch.Tensor]]:
    """``(name, module, input)`` of every ``nn.Conv2d`` the forward of ``x`` calls, in call order
    (a module called twice: its first input), each input a float32 NCHW copy."""
    seen: dict[str, tuple[nn.Conv2d, torch.Tensor]] = {}
    order: list[str] = []

    def hook(name):
        def record(module, inputs):
            if name not in seen:
                inp = inputs[0].detach()
                seen[name] = (module, (inp.unsqueeze(0) if inp.dim() == 3 else inp).float().contiguous().clone())
                order.append(name)
        return record

    handles = [m.register_forward_pre_hook(hook(n or "(model)")) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelError(f"the model does not accept input of shape {list(x.shape)} "
                         f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})") from None
    finally:
        for h in handles:
            h.remove()
    return [(n, *seen[n]) for n in order]


def layer_args(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, dict, str]:
    """``(input, F.conv2d keyword arguments, note)`` computing ``conv(x)`` with zero padding given
    in pixels: a padding mode or asymmetric "same" padding becomes an explicit pad of the input."""
    w = conv.weight.detach().float()
    b = conv.bias.detach().float() if conv.bias is not None else None
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if isinstance(conv.padding, str):   # "valid" or "same" (stride 1)
        pads = [(0, 0), (0, 0)] if conv.padding == "valid" else [
            (t // 2, t - t // 2) for t in (dh * (kh - 1), dw * (kw - 1))]
    else:
        pads = [(p, p) for p in conv.padding]
    note = ""
    symmetric = all(lo == hi for lo, hi in pads)
    if conv.padding_mode != "zeros" or not symmetric:
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]), mode=mode)
        note = (f"input padded first ({conv.padding_mode}, rows {pads[0]}, columns {pads[1]}), then padding 0"
                if any(v for p in pads for v in p) else "")
        pads = [(0, 0), (0, 0)]
    opts = {"w": w, "b": b, "stride": tuple(conv.stride), "padding": (pads[0][0], pads[1][0]),
            "dilation": tuple(conv.dilation), "groups": conv.groups}
    return x, opts, note


def measure_layer(name: str, conv: nn.Conv2d, x: torch.Tensor, repeats: int,
                  algorithms: tuple[str, ...] = NAMES) -> LayerTable:
    """One layer's :class:`LayerTable` on its input ``x``."""
    x, opts, note = layer_args(conv, x)
    w, b = opts["w"], opts["b"]
    args = (opts["stride"], opts["padding"], opts["dilation"], opts["groups"])
    cs = conv_shape(x.shape, w.shape, *args, algo=name)

    def reference():
        return F.conv2d(x, w, b, *args)

    ref, ref_peak = peak_bytes(reference)
    layer = LayerTable(name, cs, 0.0, max(ref_peak - cs.output_bytes, 0), note=note)
    timed = {"F.conv2d": reference}
    for algo_name in algorithms:
        algo = ALGORITHMS[algo_name]
        ok, why = algo.supports(cs)
        if not ok:
            layer.rows.append(AlgoRow(algo_name, False, why))
            continue
        predicted = algo.workspace(cs)
        if predicted > MAX_WORKSPACE_BYTES:
            layer.rows.append(AlgoRow(algo_name, True, f"not run: predicted workspace {predicted:,} B is over the "
                                                         f"{MAX_WORKSPACE_BYTES:,} B cap",
                                      workspace_predicted=predicted))
            continue

        def run(algo=algo):
            return algo.conv2d(x, w, b, *args)

        y, peak = peak_bytes(run)
        layer.rows.append(AlgoRow(algo_name, True, "", float((y - ref).abs().max()), predicted,
                                  peak - cs.output_bytes))
        timed[algo_name] = run
    times = interleaved_median_ms(timed, repeats)      # all timed in turn: drift hits each alike
    layer.reference_ms = times["F.conv2d"]
    for row in layer.rows:
        row.time_ms = times.get(row.algorithm)
    return layer


def conv_table(model: nn.Module, x, repeats: int = 5, algorithms: tuple[str, ...] = NAMES) -> list[LayerTable]:
    """The table of every Conv2d ``model`` calls on ``x``."""
    return [measure_layer(name, conv, inp, repeats, algorithms) for name, conv, inp in conv_inputs(model, x)]


def summarize(layers: list[LayerTable]) -> dict:
    """Per algorithm: layers supported, worst max abs error, predicted vs measured workspace
    (layers where they are equal, the largest relative gap), and the layers where it is fastest."""
    out = {}
    for algo in NAMES:
        rows = [(layer, r) for layer in layers for r in layer.rows if r.algorithm == algo]
        ran = [(layer, r) for layer, r in rows if r.time_ms is not None]
        gaps = [abs(r.workspace_measured - r.workspace_predicted) / max(r.workspace_predicted, 1) for _, r in ran]
        out[algo] = {
            "layers": len(rows), "run": len(ran),
            "worst_max_abs_error": max((r.max_abs_error for _, r in ran), default=None),
            "workspace_equal": sum(r.workspace_measured == r.workspace_predicted for _, r in ran),
            "workspace_max_rel_gap": max(gaps, default=None),
            "fastest_on": [layer.name for layer, _ in ran if layer.fastest() == algo],
        }
    return out
