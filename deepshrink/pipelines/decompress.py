"""``deepshrink decompress`` as one call: a .dsz file back to a normal .safetensors model file,
every weight bit-exact, with the per-layer compression report of the .dsz."""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from ..codec import CompressionReport, compression_report, load_compressed
from ..io import ModelInfo, save_model

__all__ = ["DecompressRun", "decompress_file"]


@dataclass
class DecompressRun:
    model: nn.Module
    info: ModelInfo
    report: CompressionReport           # what the .dsz stores, per layer


def decompress_file(src: str | os.PathLike, out: str | os.PathLike, *, trust_code: bool = False) -> DecompressRun:
    """Decode the .dsz ``src`` and write its model to ``out`` (.safetensors)."""
    model = load_compressed(src, trust_code=trust_code)
    save_model(model, out, model.deepshrink_info)
    return DecompressRun(model, model.deepshrink_info, compression_report(src))
