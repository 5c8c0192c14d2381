"""Cost rules for tensor operations that are not layers: the aten ops a ``TorchDispatchMode`` sees.

A model from another package does much of its arithmetic outside ``nn.Module`` leaves: the
attention products of a transformer (``q @ k.transpose``, ``F.scaled_dot_product_attention``),
a functional ``F.linear`` / ``F.conv2d`` on its own parameters, ``einsum``. PyTorch lowers all
of these to a few aten ops (``matmul`` and ``einsum`` to ``mm`` / ``bmm``, ``F.linear`` to
``addmm`` / ``mm``, ``F.conv2d`` to ``convolution``), so one rule per aten op counts them all,
from the operand shapes, in the units of ``counts.py``:

* products ``(..., m, k) @ (..., k, n)`` (mm, bmm, addmm, baddbmm, mv, addmv, dot):
  MACs = outputs * k (Han et al. 2016's unit; ``torch.utils.flop_counter`` FLOPs / 2). When an
  operand is a model parameter W, ``nonzero_macs`` counts only the products with a nonzero
  weight: each element of W takes part in MACs / numel(W) of them, so MACs * nnz(W) / numel(W);
  a product of two activations has no weight to skip, so all its MACs count.
* convolution: outputs * (C_in / groups) * k_h * k_w (transposed: inputs * (C_out / groups) * k_h * k_w).
* scaled dot-product attention (Vaswani et al. 2017), q (B, H, L, E), k (B, H, S, E),
  v (B, H, S, Ev): QK^T is B H L S E MACs and the weights times V are B H L S Ev; the scores
  (B H L S of them) are scaled (a multiplication each), masked (an addition each, with a mask)
  and softmaxed, fused: never written. A causal mask is counted as a dense product, as
  ``flop_counter`` does (which, in torch 2.13, has no rule for the CPU kernel
  ``_scaled_dot_product_flash_attention_for_cpu``; we do). ``nn.MultiheadAttention``'s fused
  inference op counts its q, k, v and output projections plus this attention.
* softmax (and log-softmax) over n values in r rows: n - r additions (the sums), n multiplications (normalising);
  exponentials, like activations, are traffic only.
* layer / group norm over n values: statistics (n additions, n squares, n additions) and
  (x - mean) * rstd * w + b: 4 n additions, 3 n multiplications.
* elementwise ops (tagged ``pointwise`` by PyTorch): add/sub count one addition and mul/div one
  multiplication per output, reading two operands (as the residual-add rows always have); other
  elementwise ops (activations, comparisons, selections) are traffic only, as the activation layers.
* reductions (tagged ``reduction``): sum-like ones n_in - n_out additions; max-like ones traffic only.
* data movement (cat, copies, gathers, embedding lookups, padding): read and write each output once.
* views, reshapes, tensor creation and metadata: free.

Every other op has no rule: :func:`count_op` returns ``None`` and the profiler lists it
("not counted: aten.xyz x N") instead of counting it as zero.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .counts import LayerCost, count_elementwise

__all__ = ["OP_COUNTERS", "FREE_OPS", "count_op", "op_name"]

aten = torch.ops.aten
IsWeight = Callable[[torch.Tensor], bool]
OpCounter = Callable[[tuple, dict, object, IsWeight], LayerCost]


def op_name(func) -> str:
    """``aten.bmm`` for ``aten.bmm.default``: the name the footer lists."""
    return str(getattr(func, "overloadpacket", func))


def _numel(t) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _distinct(t) -> int:
    """Elements a tensor really holds: a broadcast (stride 0) dimension counts once."""
    if not isinstance(t, torch.Tensor):
        return 0
    return math.prod(s for s, st in zip(t.shape, t.stride()) if st != 0)


def _tensors(args) -> list[torch.Tensor]:
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (tuple, list)):
            out.extend(b for b in a if isinstance(b, torch.Tensor))
    return out


def _first(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _dot_products(macs: int, nonzero: int, outputs: int, bias: bool, min_reads: int) -> LayerCost:
    """``outputs`` dot products of ``macs / outputs`` terms each (as ``counts._weighted_layer``)."""
    return LayerCost(macs=macs, nonzero_macs=nonzero, multiplications=macs,
                     additions=macs - outputs + (outputs if bias else 0),
                     reads_per_op=2 * macs, min_reads=min_reads, writes=outputs)


def _product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, is_weight: IsWeight,
             bias: torch.Tensor | None = None) -> LayerCost:
    # a (..., m, k) @ b (..., k, n) -> out (..., m, n)
    macs = _numel(out) * int(a.shape[-1])
    # every element of a weight operand takes part in the same number of MACs (macs / its numel)
    weight = b if is_weight(b) else a if is_weight(a) else None
    nonzero = macs if weight is None else macs * int(torch.count_nonzero(weight)) // max(1, _numel(weight))
    return _dot_products(macs, nonzero, _numel(out), bias is not None,
                         _distinct(a) + _distinct(b) + _distinct(bias))


def count_mm(args, kwargs, out, is_weight) -> LayerCost:           # mm(a, b), bmm, mv, dot
    return _product(args[0], args[1], out, is_weight)


def count_addmm(args, kwargs, out, is_weight) -> LayerCost:        # addmm(bias, a, b), baddbmm, addmv
    return _product(args[1], args[2], out, is_weight, bias=args[0])


def count_convolution(args, kwargs, out, is_weight) -> LayerCost:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, w, bias, transposed = args[0], args[1], args[2], bool(args[6])
    per_position = _numel(w[0])                      # (C_in / groups) * k_h * k_w (transposed: C_out / groups ...)
    positions = _numel(x) // int(w.shape[0]) if transposed else _numel(out) // int(out.shape[1])
    macs = (_numel(x) if transposed else _numel(out)) * per_position
    nonzero = positions * int(torch.count_nonzero(w)) if is_weight(w) else macs
    return _dot_products(macs, nonzero, _numel(out), bias is not None,
                         _distinct(x) + _distinct(w) + _distinct(bias))


def _attention(q, k, v, out, mask) -> LayerCost:
    # q (..., L, E), k (..., S, E), v (..., S, Ev) -> out (..., L, Ev); "..." = batch * heads of q
    heads, L, E = _numel(q) // (q.shape[-2] * q.shape[-1]), int(q.shape[-2]), int(q.shape[-1])
    S, Ev = int(k.shape[-2]), int(v.shape[-1])
    scores = heads * L * S
    macs = scores * (E + Ev)
    rows = heads * L
    return LayerCost(
        macs=macs, nonzero_macs=macs,
        multiplications=macs + scores + scores,                      # products, scale, normalise
        additions=(scores * E - scores) + (rows * Ev * S - rows * Ev) + (scores - rows)
        + (scores if mask is not None else 0),
        reads_per_op=2 * macs + scores, min_reads=_distinct(q) + _distinct(k) + _distinct(v) + _distinct(mask),
        writes=_numel(out))


def count_sdpa(args, kwargs, out, is_weight) -> LayerCost:
    # _scaled_dot_product_*_attention(query, key, value, ...); the mask is attn_mask or attn_bias
    mask = kwargs.get("attn_mask", kwargs.get("attn_bias"))
    if mask is None and len(args) > 3 and isinstance(args[3], torch.Tensor):
        mask = args[3]
    return _attention(args[0], args[1], args[2], _first(out), mask)


def count_native_mha(args, kwargs, out, is_weight) -> LayerCost:
    # _native_multi_head_attention(query (B, L, D), key (B, S, D), value, embed_dim, num_head,
    #   qkv_weight (3D, D), qkv_bias, proj_weight (D, D), proj_bias, mask, ...): nn.MultiheadAttention's
    #   inference fast path = q, k, v projections, attention over num_head heads, output projection
    q, k, v, d, heads, w_qkv, b_qkv, w_out, b_out = args[:9]
    mask = args[9] if len(args) > 9 else kwargs.get("mask")
    biases = b_qkv.chunk(3) if b_qkv is not None else (None, None, None)
    parts = [_product(x, w.t(), x.new_empty(*x.shape[:-1], d), is_weight, b)
             for x, w, b in zip((q, k, v), w_qkv.chunk(3), biases)]
    B, L, S = int(q.shape[0]), int(q.shape[1]), int(k.shape[1])
    hd = d // heads
    shape = (B, heads, L, hd), (B, heads, S, hd)
    parts.append(_attention(q.new_empty(shape[0]), k.new_empty(shape[1]), v.new_empty(shape[1]),
                            q.new_empty(shape[0]), mask))
    parts.append(_product(q.new_empty(B, L, d), w_out.t(), _first(out), is_weight, b_out))
    return sum(parts, LayerCost())


def count_softmax(args, kwargs, out, is_weight) -> LayerCost:
    # _softmax(x, dim, half_to_float), _safe_softmax(x, dim), _log_softmax(x, dim, half_to_float)
    x, n = args[0], _numel(args[0])
    rows = n // max(1, int(x.shape[args[1]])) if x.dim() else n
    return LayerCost(additions=n - rows, multiplications=n, reads_per_op=n, min_reads=n, writes=_numel(out))


def count_norm(args, kwargs, out, is_weight) -> LayerCost:
    # native_layer_norm(x, shape, w, b, eps), native_group_norm(x, w, b, N, C, HxW, groups, eps)
    n = _numel(args[0])
    params = sum(_numel(t) for t in _tensors(args[1:]))
    return LayerCost(multiplications=3 * n, additions=4 * n, reads_per_op=4 * n, min_reads=n + params,
                     writes=_numel(_first(out)))


def count_batchnorm(args, kwargs, out, is_weight) -> LayerCost:
    # _native_batch_norm_legit_no_training(x, w, b, mean, var, ...): y = a * x + b (statistics folded)
    n = _numel(args[0])
    return LayerCost(multiplications=n, additions=n, reads_per_op=3 * n,
                     min_reads=n + 2 * int(args[0].shape[1]), writes=_numel(_first(out)))


def _window(args, out, adaptive: bool) -> int:
    if adaptive:                 # _adaptive_*_pool2d(x, output_size): the average window
        return max(1, _numel(args[0]) // max(1, _numel(_first(out))))
    k = list(args[1])            # *_pool2d(x, kernel_size, ...)
    return k[0] * k[0] if len(k) == 1 else math.prod(k)


def _maxpool(adaptive: bool) -> OpCounter:
    def count(args, kwargs, out, is_weight) -> LayerCost:
        y = _numel(_first(out))
        return LayerCost(reads_per_op=_window(args, out, adaptive) * y, min_reads=_numel(args[0]), writes=y)
    return count


def _avgpool(adaptive: bool) -> OpCounter:
    def count(args, kwargs, out, is_weight) -> LayerCost:
        y, window = _numel(_first(out)), _window(args, out, adaptive)
        return LayerCost(additions=y * (window - 1), multiplications=y, reads_per_op=window * y,
                         min_reads=_numel(args[0]), writes=y)
    return count


def count_movement(args, kwargs, out, is_weight) -> LayerCost:
    """cat, copies, gathers, lookups: each output element read once and written once."""
    y = sum(_numel(t) for t in _tensors([out]))
    return count_elementwise(min(y, sum(_distinct(t) for t in _tensors(args))), y, operands=1)


_ADDITIVE = {aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub}
_MULTIPLICATIVE = {aten.mul, aten.mul_, aten.div, aten.div_}
_SUMMING = {aten.sum, aten.mean, aten.nansum, aten.var, aten.std, aten.var_mean, aten.std_mean,
            aten.linalg_vector_norm, aten.logsumexp, aten.prod}
# elementwise ops PyTorch does not tag ``pointwise``
_ELEMENTWISE = {aten.rsub, aten.hardswish, aten.hardswish_, aten.masked_fill_}


def count_pointwise(func, args, out) -> LayerCost:
    n_in = sum(_distinct(t) for t in _tensors(args))
    y = _numel(_first(out))
    packet = func.overloadpacket
    if packet in _ADDITIVE or packet in _MULTIPLICATIVE:
        cost = count_elementwise(n_in, y, operands=2, arith=1)
        if packet in _MULTIPLICATIVE:
            cost.multiplications, cost.additions = cost.additions, 0
        return cost
    return count_elementwise(n_in, y, operands=max(1, len(_tensors(args))))


def count_reduction(func, args, out) -> LayerCost:
    n, y = _numel(args[0]), _numel(_first(out))
    adds = n - y if func.overloadpacket in _SUMMING else 0
    return LayerCost(additions=adds, reads_per_op=n, min_reads=n, writes=y)


# (row kind, counter) per aten op
OP_COUNTERS: dict[object, tuple[str, OpCounter]] = {
    aten.mm: ("matmul", count_mm),
    aten.mv: ("matmul", count_mm),
    aten.dot: ("matmul", count_mm),
    aten.addmv: ("matmul", count_addmm),
    aten.bmm: ("matmul", count_mm),
    aten.addmm: ("matmul", count_addmm),
    aten.baddbmm: ("matmul", count_addmm),
    aten.convolution: ("conv", count_convolution),
    aten._scaled_dot_product_flash_attention_for_cpu: ("sdpa", count_sdpa),
    aten._scaled_dot_product_flash_attention: ("sdpa", count_sdpa),
    aten._scaled_dot_product_efficient_attention: ("sdpa", count_sdpa),
    aten._scaled_dot_product_cudnn_attention: ("sdpa", count_sdpa),
    aten._native_multi_head_attention: ("mha", count_native_mha),
    aten._softmax: ("softmax", count_softmax),
    aten._safe_softmax: ("softmax", count_softmax),
    aten._log_softmax: ("log_softmax", count_softmax),
    aten.native_layer_norm: ("layer_norm", count_norm),
    aten.native_group_norm: ("group_norm", count_norm),
    aten._native_batch_norm_legit_no_training: ("batch_norm", count_batchnorm),
    aten.max_pool2d_with_indices: ("max_pool", _maxpool(adaptive=False)),
    aten.adaptive_max_pool2d: ("max_pool", _maxpool(adaptive=True)),
    aten.avg_pool2d: ("avg_pool", _avgpool(adaptive=False)),
    aten._adaptive_avg_pool2d: ("avg_pool", _avgpool(adaptive=True)),
    aten.cat: ("cat", count_movement),
    aten.stack: ("cat", count_movement),
    aten._to_copy: ("copy", count_movement),
    aten.copy_: ("copy", count_movement),
    aten.embedding: ("embedding", count_movement),
    aten.gather: ("gather", count_movement),
    aten.index_select: ("gather", count_movement),
    aten.index: ("gather", count_movement),
    aten.constant_pad_nd: ("pad", count_movement),
    aten.repeat: ("copy", count_movement),
    aten.flip: ("copy", count_movement),
    aten.roll: ("copy", count_movement),
    aten.upsample_nearest2d: ("upsample", count_movement),
}

# no arithmetic and no traffic worth a row (views are recognised by their schema)
FREE_OPS = {aten._unsafe_view, aten._reshape_alias, aten.empty, aten.empty_like, aten.empty_strided,
            aten.zeros, aten.zeros_like, aten.ones, aten.ones_like, aten.full, aten.full_like,
            aten.arange, aten.scalar_tensor, aten.new_empty, aten.new_zeros, aten.new_ones, aten.new_full,
            aten.lift_fresh_copy, aten.fill_, aten.zero_, aten._local_scalar_dense, aten.sym_size,
            aten.sym_stride, aten.sym_numel, aten.is_same_size, aten._assert_async, aten._assert_scalar,
            aten.resolve_conj, aten.resolve_neg, aten.detach_, aten.set_}


def count_op(func, args, kwargs, out, is_weight: IsWeight) -> tuple[str, LayerCost] | None:
    """(row kind, cost) of one aten op, ``("", LayerCost())`` for a free op, ``None`` if no rule."""
    packet = getattr(func, "overloadpacket", None)
    if getattr(func, "is_view", False) or packet in FREE_OPS:
        return "", LayerCost()
    rule = OP_COUNTERS.get(packet)
    if rule is not None:
        kind, fn = rule
        return kind, fn(args, kwargs, out, is_weight)
    tags = getattr(func, "tags", ())
    if torch.Tag.pointwise in tags or packet in _ELEMENTWISE:
        return packet.__name__.rstrip("_"), count_pointwise(func, args, out)
    if torch.Tag.reduction in tags:
        return packet.__name__.rstrip("_"), count_reduction(func, args, out)
    return None
