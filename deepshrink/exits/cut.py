"""Exit heads after channel pruning: when ``prune-channels`` removes channels of a layer an exit head
reads, the head's first layer must lose the same input channels, or it no longer fits.

The cut of a layer's *output* is not in the channel plan by name (the plan keys weight layers, and
an exit may sit after a residual stage, a ReLU or a pooling layer). It is found from the order the
model runs its layers: the output channels of ``layer`` are those of the last weight layer (Conv,
Linear or BatchNorm) that finished before ``layer`` did, since what runs in between (activations,
pooling, a residual add of the same coupled channels) keeps channels as they are. The result is
checked against the pruned model's real output, and a head whose input cannot be told this way is
reported, never cut wrongly.

The head cuts join the channel plan (``exit_heads.<i>.<j>: {"in": [...]}``), so loading the file
re-applies them after the loader has attached the heads (:mod:`deepshrink.modelfile`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..channel_plan import ChannelPlan, apply_plan
from ..exit_heads import HEADS_ATTR
from .taps import layer_outputs

__all__ = ["run_order", "tap_channels", "head_input_layer", "cut_heads"]

_WEIGHT_LAYERS = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def run_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of ``model``'s modules in the order their forward calls finish (the heads left out)."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
               for name, m in model.named_modules() if name and name.split(".")[0] != HEADS_ATTR]
    was = model.training
    try:
        model.eval()(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return order


def tap_channels(model: nn.Module, order: list[str], layer: str, plan: ChannelPlan) -> list[int] | None:
    """The original channel indices of ``layer``'s output that ``plan`` keeps (None: all of them),
    from ``order`` (:func:`run_order` on the model before the cut)."""
    modules = dict(model.named_modules())
    if layer not in order:
        return None
    for name in reversed(order[:order.index(layer) + 1]):
        if isinstance(modules.get(name), _WEIGHT_LAYERS):
            return plan.layers.get(name, {}).get("out")
    return None


def head_input_layer(head: nn.Sequential) -> int | None:
    """Index in ``head`` of the layer that takes the head's input channels: its first conv, or the
    linear layer after global pooling (depth 0); None for a head on flat features."""
    if isinstance(head[0], nn.Conv2d):
        return 0
    if isinstance(head[0], nn.AdaptiveAvgPool2d):
        return next(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    return None


def cut_heads(model: nn.Module, layers: list[str], order: list[str], plan: ChannelPlan,
              example: torch.Tensor) -> tuple[ChannelPlan, list[str]]:
    """Cut the input of each exit head on ``model`` (already pruned by ``plan``) to the channels its
    layer still produces. Returns (the head cuts as a plan, in the heads' own indices; the layers
    whose head could not be matched: left as they were)."""
    heads = getattr(model, HEADS_ATTR)
    outputs, _ = layer_outputs(model.eval(), example, layers, full=False)
    cuts, unmatched = ChannelPlan(), []
    for i, (layer, out) in enumerate(zip(layers, outputs)):
        head = heads[i]
        j = head_input_layer(head)
        if j is None:                            # a head on flat features: Flatten, then Linear
            first = next(m for m in head if isinstance(m, nn.Linear))
            if out[0].numel() != first.in_features:
                unmatched.append(layer)
            continue
        have = head[j].weight.shape[1]
        idx = tap_channels(model, order, layer, plan)
        if idx is None:
            if out.shape[1] != have:
                unmatched.append(layer)
            continue
        if len(idx) != out.shape[1] or max(idx) >= have:
            unmatched.append(layer)
            continue
        cuts.layers[f"{HEADS_ATTR}.{i}.{j}"] = {"in": list(idx)}
    apply_plan(model, cuts)
    return cuts, unmatched
