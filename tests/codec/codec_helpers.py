"""Helpers shared by the codec tests (imported by name: pytest puts this folder on sys.path).

- ``quantize_like_kmeans``: give every Linear/Conv weight a random mask and codebook the way the
  k-means stage leaves them (fp16-exact centroids, ``weight_codebook``, ``weight_bits``), without
  depending on deepshrink.quant.
- ``edit_header`` / ``reseal``: change a .dsz file's header or sections and fix its CRCs, so a
  test reaches the decoder's own checks instead of stopping at a CRC mismatch.
- ``decode_blob``: parse and decode a blob into its state dict (no architecture needed).
"""

from __future__ import annotations

import json
import struct
import zlib

import torch
from torch import nn

from deepshrink.codec.container import PREAMBLE, VERSION, VERSIONS, compress_header, inflate_header, parse_file
from deepshrink.codec.model_io import decode_file

__all__ = ["quantize_like_kmeans", "edit_header", "reseal", "decode_blob", "split_file", "Tiny", "tiny_model"]


def quantize_like_kmeans(model: nn.Module, bits: int = 4, sparsity: float = 0.8, per_channel: bool = False,
                         seed: int = 0, keep_mask: bool = True) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        w = mod.weight.data                                          # (C_out, ...)
        mask = torch.rand(w.shape, generator=g) >= sparsity
        k = 1 << bits
        rows = w.shape[0] if per_channel else 1
        cb = (0.1 * torch.randn(rows, k, generator=g)).half().float()   # fp16-exact centroids
        cb = torch.where(cb == 0, torch.full_like(cb, 0.5), cb)
        idx = torch.randint(0, k, w.shape, generator=g)
        if per_channel:
            row = torch.arange(w.shape[0]).view(-1, *[1] * (w.dim() - 1)).expand_as(idx)
            table = cb[row, idx]
        else:
            table = cb[0, idx]
        w.copy_(torch.where(mask, table, torch.zeros(())))
        mod.register_buffer("weight_codebook", cb if per_channel else cb[0].clone())
        if keep_mask:
            mod.register_buffer("weight_mask", mask)
        mod.weight_bits = bits
    return model


class Tiny(nn.Module):
    """Two small layers: enough for a golden file of a few hundred bytes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        self.out = nn.Linear(2, 1, bias=False)


def split_file(blob: bytes) -> tuple[dict, bytes]:
    """(header dict, data region) of a .dsz blob, unchecked (a zlib'd header inflated with the
    dictionary its version uses)."""
    version, flags, hlen = struct.unpack_from("<HHI", blob, 8)
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    text = inflate_header(head, 1 << 26, "split_file", version) if flags & 1 else head
    return json.loads(text), blob[PREAMBLE.size + hlen:]


def _join(header: dict, data: bytes, compress: bool = False) -> bytes:
    """A file of ``header`` and ``data``; the preamble's version is the header's when that is a
    known version (else the writer's), the header zlib'd as that version does when ``compress``."""
    version = header.get("version") if header.get("version") in VERSIONS and type(header.get("version")) is int \
        else VERSION
    head = json.dumps(header, separators=(",", ":")).encode()
    head = compress_header(head, version) if compress else head
    return PREAMBLE.pack(b"\x89DSZ\r\n\x1a\n", version, int(compress), len(head), zlib.crc32(head)) + head + data


def reseal(blob: bytes) -> bytes:
    """Recompute every section CRC (from the offsets in the header) and the header CRC."""
    header, data = split_file(blob)
    for e in header["tensors"]:
        for s in e["sections"].values():
            s["crc32"] = zlib.crc32(data[s["offset"]:s["offset"] + s["length"]])
    return _join(header, data)


def edit_header(blob: bytes, fn) -> bytes:
    """Apply ``fn(header)`` (in place) and rebuild the file with a valid header CRC."""
    header, data = split_file(blob)
    fn(header)
    return _join(header, data)


def decode_blob(blob: bytes, **kw) -> dict[str, torch.Tensor]:
    return decode_file(parse_file(blob, "t.dsz", **kw)).state


def tiny_model() -> Tiny:
    """The golden file's model: one quantized layer (mask derived), one raw bias, one raw weight."""
    m = Tiny()
    with torch.no_grad():
        m.fc.weight.copy_(torch.tensor([[0.5, 0, 0, -0.25, 0, 0, 0, 0.5], [0, 0, 0, 0, 0, 0, -0.25, 0]]))
        m.fc.bias.copy_(torch.tensor([1.0, -2.0]))
        m.out.weight.copy_(torch.tensor([[3.0, 0.0]]))
    m.fc.register_buffer("weight_codebook", torch.tensor([-0.25, 0.5]))
    m.fc.register_buffer("weight_mask", m.fc.weight != 0)
    m.fc.weight_bits = 1
    return m
