"""BatchNorm folded into the preceding convolution (Jacob et al. 2018, section 3.2).

In eval mode BN computes y = gamma (x - mu) / sqrt(var + eps) + beta per channel. After a
conv x = W * a + b this is again a conv with
    W' = W * gamma / sqrt(var + eps)            (scaled per output channel)
    b' = (b - mu) * gamma / sqrt(var + eps) + beta,
so the quantized model has one weight tensor and one int32 bias per layer and no BN.
``fold_batchnorm`` traces the model with torch.fx and folds every BN whose input is a conv
used nowhere else; the result is a GraphModule, the original model is left untouched.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from ..errors import ModelError
from ..tracing import trace

__all__ = ["fold_conv_bn", "fold_batchnorm"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ModelError("cannot fold a BatchNorm without running statistics")
    inv = torch.rsqrt(bn.running_var + bn.eps)                       # (C_out,)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(inv)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(inv)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(inv)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight.copy_(conv.weight * (gamma * inv).reshape(-1, 1, 1, 1))  # (C_out, C_in/g, kh, kw)
    fused.bias.copy_((bias - bn.running_mean) * gamma * inv + beta)
    for name, buf in conv.named_buffers(recurse=False):  # pruning masks: scaling keeps zeros zero
        fused.register_buffer(name, buf.clone())
    return fused


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` (eval mode) with every conv -> BN pair folded."""
    gm = model if isinstance(model, fx.GraphModule) else trace(copy.deepcopy(model).eval())
    gm.eval()
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), nn.Conv2d) and len(src.users) == 1):
            continue
        fused = fold_conv_bn(mods[src.target], mods[node.target])
        _set_module(gm, src.target, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
