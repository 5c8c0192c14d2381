"""Storage size of a model's parameters under several encodings.

* dense fp32: 4 bytes per parameter;
* dense at ``bits``: every weight tensor at that bit width, other parameters fp32;
* sparse CSR: per weight tensor viewed as (rows, cols), fp32 nonzero values, column indices
  in the narrowest of 8/16/32 bits that holds ``cols - 1``, and ``rows + 1`` 32-bit row
  pointers; other parameters dense fp32;
* compressed: the size of an encoded file, when one is given.

:func:`disk_bytes` is what a file (or a model folder) really takes on disk, which none of the
above is: a file adds its header and metadata, and may hold integer codes, entropy-coded streams
or masks that a model's parameters do not show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelSize", "model_size", "csr_bytes", "disk_bytes"]


@dataclass
class ModelSize:
    params: int
    nonzero_params: int
    dense_fp32_bytes: int
    bits: int
    dense_bits_bytes: int
    sparse_csr_bytes: int
    compressed_bytes: int | None = None


def _index_bits(cols: int) -> int:
    for b in (8, 16, 32):
        if cols - 1 < (1 << b):
            return b
    return 64


def csr_bytes(w: torch.Tensor) -> int:
    """Bytes of ``w`` in CSR with fp32 values (see module docstring)."""
    rows = int(w.shape[0]) if w.dim() > 0 else 1
    cols = int(w.numel()) // max(1, rows)
    nnz = int(torch.count_nonzero(w))
    bits = nnz * 32 + nnz * _index_bits(max(1, cols)) + (rows + 1) * 32
    return (bits + 7) // 8


def _weights(model: nn.Module):
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            yield w


def model_size(model: nn.Module, bits: int = 8, compressed_path: str | os.PathLike | None = None) -> ModelSize:
    params = sum(int(p.numel()) for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    weights = list(_weights(model))
    w_numel = sum(int(w.numel()) for w in weights)
    other = params - w_numel
    dense_bits = (w_numel * bits + 7) // 8 + other * 4
    csr = sum(csr_bytes(w) for w in weights) + other * 4
    comp = os.path.getsize(compressed_path) if compressed_path is not None else None
    return ModelSize(params, nonzero, params * 4, bits, dense_bits, csr, comp)


def disk_bytes(path: str | os.PathLike) -> int | None:
    """Bytes of the file ``path`` on disk; of a folder (a Hugging Face model), the sum of the files
    in it and its subfolders (symbolic links not followed); None when there is nothing there."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        return None
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total
