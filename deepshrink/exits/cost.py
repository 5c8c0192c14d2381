"""What each exit costs, and what a sample costs on average given where samples leave.

With exits ``0 .. E-1`` (heads) and the model's own output as exit ``E``, a sample that leaves at
exit ``k`` has run the backbone up to exit ``k``'s layer (``B_k``; ``B_E`` the whole backbone),
every enabled head up to and including ``k`` (``H_j``) and their decisions (``D_j``):

    C_k = B_k + sum_{j <= k, j enabled} (H_j + D_j)          (k < E)
    C_E = B_E + sum_{j < E, j enabled} (H_j + D_j)

and the expected cost per sample is ``sum_k share_k C_k``, ``share_k`` the fraction of samples
leaving at exit ``k`` (the notes' T_k: the time of the model cut at exit k; tau(gamma_k): its
decision function's). A disabled exit (no threshold) costs nothing: its head never runs.

:func:`measure_stage_macs` counts ``B_k`` and ``H_j`` with the profiler (``profile_model``) on the
real modules, the backbone cut at each exit layer by a tap that stops the forward pass there;
:func:`measure_stage_latency` times the same pieces at batch 1 (the "measured cost" a decision
function may be trained against).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..profile import measure_latency, profile_model
from .taps import run_until

__all__ = ["StageCosts", "measure_stage_macs", "measure_stage_latency", "path_costs", "expected_cost",
           "exit_shares", "Prefix"]


@dataclass
class StageCosts:
    """``backbone``: E + 1 values (to each exit layer, then the whole backbone); ``heads``: E values;
    ``decision``: per decision at an exit; ``unit``: "MACs" or "ms"."""

    backbone: list[float]
    heads: list[float]
    decision: float = 0.0
    unit: str = "MACs"

    @property
    def full(self) -> float:
        """The original model's cost: the whole backbone, no head."""
        return self.backbone[-1]

    def to_dict(self) -> dict:
        return {"backbone": list(self.backbone), "heads": list(self.heads), "decision": self.decision,
                "unit": self.unit}


def path_costs(costs: StageCosts, enabled: list[bool]) -> list[float]:
    """``C_0 .. C_E`` (see the module's formula); a disabled exit's own entry is its cost as if it
    ran, never used since no sample leaves there."""
    out, heads = [], 0.0
    for k, on in enumerate(enabled):
        if on:
            heads += costs.heads[k] + costs.decision
        out.append(costs.backbone[k] + heads)
    out.append(costs.backbone[-1] + heads)
    return out


def exit_shares(exit_index: torch.Tensor, n_exits: int) -> list[float]:
    """The fraction of samples leaving at each of the ``n_exits`` exits (the last: the model's output)."""
    n = max(1, int(exit_index.numel()))
    return (torch.bincount(exit_index.flatten().long(), minlength=n_exits).double() / n).tolist()


def expected_cost(shares: list[float], paths: list[float]) -> float:
    """``sum_k share_k C_k``: the average cost per sample."""
    return float(sum(s * c for s, c in zip(shares, paths)))


class Prefix(nn.Module):
    """The model up to ``layer`` (the forward pass stops there), then ``head`` if given. Make it
    ``.eval()`` before timing or profiling it: those restore its mode, and with it its children's."""

    def __init__(self, model: nn.Module, layer: str, head: nn.Module | None = None):
        super().__init__()
        self.model, self.layer, self.head = model, layer, head

    def forward(self, x):
        f = run_until(self.model, x, self.layer)
        return self.head(f) if self.head is not None else f


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    return int(profile_model(model, x).totals["macs"])


@torch.no_grad()
def measure_stage_macs(model: nn.Module, layers: list[str], heads: list[nn.Module], example: torch.Tensor,
                       decision: int = 0) -> StageCosts:
    """MACs per sample of the backbone up to each of ``layers`` and of the whole backbone (``model``
    as it runs without exits), and of each head, counted by the profiler on ``example`` (batch 1)."""
    x = example[:1]
    was = model.training
    model.eval()
    try:
        backbone = [_macs(Prefix(model, layer).eval(), x) for layer in layers] + [_macs(model, x)]
        head_macs = [_macs(head.eval(), run_until(model, x, layer)) for layer, head in zip(layers, heads)]
    finally:
        model.train(was)
    return StageCosts([float(v) for v in backbone], [float(v) for v in head_macs], float(decision), "MACs")


@torch.no_grad()
def measure_stage_latency(model: nn.Module, layers: list[str], heads: list[nn.Module], example: torch.Tensor,
                          repeats: int = 50, threads: int | None = None) -> StageCosts:
    """The same pieces timed at batch 1 (median ms of ``repeats``): each backbone prefix, the whole
    backbone, each head on its layer's output."""
    x = example[:1]
    was = model.training
    model.eval()
    try:
        backbone = [measure_latency(Prefix(model, layer).eval(), x, repeats=repeats, threads=threads).median_ms
                    for layer in layers]
        backbone.append(measure_latency(model, x, repeats=repeats, threads=threads).median_ms)
        head_ms = [measure_latency(head, run_until(model, x, layer), repeats=repeats, threads=threads).median_ms
                   for layer, head in zip(layers, heads)]
    finally:
        model.train(was)
    return StageCosts(backbone, head_ms, 0.0, "ms")
