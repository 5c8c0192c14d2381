"""Adaptive inference that really stops: the model runs until every sample has left.

:class:`EarlyExitModel` wraps a model that carries exit heads (its ``exit_heads`` child, built from
an :class:`~deepshrink.exit_heads.ExitPlan`) and runs it with a tap at each enabled exit's layer
(:mod:`.taps`). At a tap the head scores the samples still running; those whose score reaches the
exit's threshold leave with that head's logits, and the tap hands only the rest on:

* batch 1: a sample that leaves ends the forward pass there (:class:`~.taps.StopForward`); the
  layers after the exit never run;
* a batch: the tap returns the rows still undecided, so every later layer runs on fewer rows,
  and the pass ends as soon as none is left. This needs layers after an exit that treat rows
  independently (checked when the exit is placed: :func:`.taps.check_cut`; BatchNorm in eval mode
  does).

A sample that reaches the end gets the model's own output, exactly as without exits (the heads
do not touch the backbone). :meth:`EarlyExitModel.freeze` readies it for inference: a copy of the
heads with each BatchNorm folded into its conv (fewer calls at batch 1, where a head's small
layers cost more time than their MACs suggest). ``last_exits`` holds, after each call, the exit each sample left at
(the model's own output is exit ``E``, the number of heads).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ModelError
from ..exit_heads import EXITS_KEY, HEADS_ATTR, ExitPlan
from ..modelfile import ModelInfo
from .policies import exit_score
from .taps import StopForward, tapped

__all__ = ["EarlyExitModel", "heads_of", "adaptive_accuracy"]


def heads_of(model: nn.Module, where: str = "model") -> nn.ModuleList:
    """The model's exit heads (its ``exit_heads`` child)."""
    heads = getattr(model, HEADS_ATTR, None)
    if not isinstance(heads, nn.ModuleList):
        raise ModelError(f"{where}: has no exit heads (no {HEADS_ATTR!r} child); attach them first "
                         "(deepshrink early-exit)")
    return heads


class EarlyExitModel(nn.Module):
    """``model`` (with its ``exit_heads``) run under ``plan``'s policy and thresholds."""

    def __init__(self, model: nn.Module, plan: ExitPlan, where: str = "model"):
        super().__init__()
        heads = heads_of(model, where)
        if len(heads) != len(plan.heads):
            raise ModelError(f"{where}: {len(heads)} exit heads, the exit plan describes {len(plan.heads)}")
        self.model = model
        self.plan = plan
        self.last_exits: torch.Tensor | None = None
        self._frozen: list[nn.Module] | None = None   # freeze(): heads with BatchNorm folded in

    @classmethod
    def from_model(cls, model: nn.Module, info: ModelInfo, where: str = "model") -> "EarlyExitModel":
        """The adaptive model of a loaded early-exit file (its ``extra["exits"]``)."""
        raw = info.extra.get(EXITS_KEY)
        if raw is None:
            raise ModelError(f"{where}: is not an early-exit model (no exit plan); make one with deepshrink early-exit")
        return cls(model, ExitPlan.from_dict(raw, where), where)

    @property
    def heads(self) -> nn.ModuleList:
        return heads_of(self.model)

    @property
    def num_exits(self) -> int:
        """Heads plus the model's own output."""
        return len(self.plan.heads) + 1

    def exit_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits for every sample (E heads, then the model's output): one full pass."""
        layers = self.plan.layers
        got: list[torch.Tensor | None] = [None] * len(layers)
        heads = self.heads

        def run_head(i, out):
            got[i] = heads[i](out)

        with tapped(self.model, layers, run_head):
            final = self.model(x)
        return [*got, final]

    def freeze(self) -> "EarlyExitModel":
        """For inference: keep a copy of the heads with each BatchNorm folded into the conv before it
        (fewer, cheaper calls at batch 1; the model's own heads, and its file, are untouched). Used in
        eval mode until :meth:`thaw`; call again after changing the heads."""
        frozen = []
        for head in self.heads:
            layers, mods = [], list(head)
            i = 0
            while i < len(mods):
                m = mods[i]
                if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
                    layers.append(fuse_conv_bn_eval(m.eval(), mods[i + 1].eval()))
                    i += 2
                else:
                    layers.append(copy.deepcopy(m))
                    i += 1
            frozen.append(nn.Sequential(*layers).eval())
        self._frozen = frozen
        return self

    def thaw(self) -> "EarlyExitModel":
        """Back to the model's own heads (drops :meth:`freeze`'s copy)."""
        self._frozen = None
        return self

    def _running_heads(self):
        return self._frozen if self._frozen is not None and not self.training else self.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        if plan.policy is None:
            raise ModelError("no exit policy chosen yet: run the threshold search (deepshrink early-exit)")
        on = [k for k, t in enumerate(plan.thresholds) if t is not None]
        n = x.shape[0]
        e = len(plan.heads)
        layers = [plan.heads[k].layer for k in on]
        heads = self._running_heads()
        gates = plan.gates
        if not on:
            self.last_exits = torch.full((n,), e, dtype=torch.long)
            return self.model(x)
        if n == 1:
            return self._one(x, on, layers, heads, gates, e)
        st = {"alive": torch.arange(n), "out": None, "exits": torch.full((n,), e, dtype=torch.long)}

        def decide(i, feature):
            k = on[i]
            z = heads[k](feature)                                        # (n_alive, C)
            go = exit_score(plan.policy, z, gates[k] if gates else None) >= plan.thresholds[k]
            if not bool(go.any()):
                return None
            if st["out"] is None:
                st["out"] = z.new_empty((n, z.shape[1]))
            leaving = st["alive"][go]
            st["out"][leaving] = z[go]
            st["exits"][leaving] = k
            if bool(go.all()):
                raise StopForward
            stay = ~go
            st["alive"] = st["alive"][stay]
            return feature[stay]                                        # the later layers see only these rows

        with tapped(self.model, layers, decide):
            try:
                final = self.model(x)
            except StopForward:
                final = None
        if final is not None:
            if st["out"] is None:
                st["out"] = final
            else:
                st["out"][st["alive"]] = final.to(st["out"].dtype)
        self.last_exits = st["exits"]
        return st["out"]

    def _one(self, x, on, layers, heads, gates, e) -> torch.Tensor:
        """Batch 1: the sample leaves at the first exit it passes, and the forward pass ends there."""
        plan = self.plan
        left: list = []

        def decide(i, feature):
            k = on[i]
            z = heads[k](feature)
            if bool(exit_score(plan.policy, z, gates[k] if gates else None) >= plan.thresholds[k]):
                left.append((k, z))
                raise StopForward
            return None

        with tapped(self.model, layers, decide):
            try:
                out = self.model(x)
            except StopForward:
                k, out = left[0]
                self.last_exits = torch.tensor([k])
                return out
        self.last_exits = torch.tensor([e])
        return out


@torch.no_grad()
def adaptive_accuracy(ee: EarlyExitModel, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int) -> tuple[float, torch.Tensor]:
    """(accuracy, exit per sample) of the adaptive model on ``x`` (N, ...) with labels ``y`` (N,),
    batch by batch (each batch's later stages run only on its undecided samples)."""
    ee.eval()
    right, exits = 0, []
    for lo in range(0, len(x), batch_size):
        out = ee(x[lo:lo + batch_size])
        right += int((out.argmax(1) == y[lo:lo + batch_size]).sum())
        exits.append(ee.last_exits)
    return right / max(1, len(x)), torch.cat(exits)
