"""Models to .dsz files and back: ``save_compressed`` / ``load_compressed`` (and bytes twins).

Every state-dict tensor becomes one header entry: a weight with a ``<name>_codebook`` sibling is
stored ``quantized`` (sparse codes + codebook, docs/FORMAT.md §4), its ``<name>_mask`` as a
``mask`` entry when it equals ``weight != 0`` (else raw), everything else ``raw`` (its bytes,
zlib'd when smaller). Loading rebuilds the architecture from the stored ModelInfo with
``io.build_arch`` (zoo names never import code), resizes it to the stored shapes, re-registers
codebook and mask buffers, restores ``<name>_bits`` attributes and sets ``model.deepshrink_info``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, FormatError, ModelError
from ..io import ModelInfo, model_from_state, read_bytes  # one loading sequence with io
from .container import MAX_ELEMENTS, Parsed, pack_file, parse_file
from .entropy import decode_bytes, encode_bytes
from .quantized import Section, decode_quantized, encode_quantized
from .schema import DTYPES

__all__ = ["Decoded", "dumps", "loads", "decode_file", "save_compressed", "load_compressed",
           "read_compressed_info", "read_file_bytes"]

CODEBOOK = "_codebook"
MASK = "_mask"
BITS = "_bits"


def _dtype_name(t: torch.Tensor) -> str:
    for name, dt in DTYPES.items():
        if dt == t.dtype:
            return name
    raise ModelError(f"tensor of dtype {t.dtype} cannot be stored in a .dsz file")


def _raw(name: str, t: torch.Tensor) -> tuple[dict, list[Section]]:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    coder, payload = encode_bytes(data)
    return ({"name": name, "dtype": _dtype_name(t), "shape": list(t.shape), "kind": "raw"},
            [Section("data", coder, payload, len(data), 256)])


def _bits_of(model: nn.Module, key: str) -> int | None:
    mod_name, _, attr = key.rpartition(".")
    bits = getattr(model.get_submodule(mod_name) if mod_name else model, attr + BITS, None)
    return bits if type(bits) is int and 0 <= bits <= 32 else None


def dumps(model: nn.Module, info: ModelInfo) -> bytes:
    """The .dsz bytes of ``model``; ModelError when a nonzero weight is not in its codebook."""
    state = model.state_dict()
    quantized = {k for k in state if k + CODEBOOK in state and state[k].dtype == torch.float32}
    tensors, done = [], set()
    for key, t in state.items():
        if key.endswith(CODEBOOK) and key[:-len(CODEBOOK)] in quantized:
            continue                                              # stored inside its weight
        if key in quantized:
            fields, sections = encode_quantized(key, t, state[key + CODEBOOK], _bits_of(model, key))
            tensors.append(({"name": key, "dtype": "float32", "shape": list(t.shape), "kind": "quantized",
                             **fields}, sections))
        elif key.endswith(MASK) and key[:-len(MASK)] in done and torch.equal(
                t.cpu(), (state[key[:-len(MASK)]] != 0).to(t.dtype).cpu()):
            tensors.append(({"name": key, "dtype": _dtype_name(t), "shape": list(t.shape), "kind": "mask",
                             "source": key[:-len(MASK)]}, []))
        else:
            tensors.append(_raw(key, t))
        done.add(key)
    blob = pack_file(info, tensors)
    try:                                  # never write a file the reader would refuse (limits)
        parse_file(blob, "<written>")
    except FormatError as exc:
        raise ModelError(f"the model cannot be stored as .dsz: {exc}") from None
    return blob


@dataclass
class Decoded:
    """What a .dsz file holds: the model spec, the state dict and the per-layer extras."""

    info: ModelInfo
    state: dict[str, torch.Tensor]
    bits: dict[str, int] = field(default_factory=dict)          # weight name -> weight_bits


def _tensor(data: bytes, dtype: str, shape: list[int], where: str) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=DTYPES[dtype])
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if dtype == "bool" and bool((t > 1).any()):
        raise FormatError(f"{where}: bool tensor holds bytes other than 0 and 1")
    return t.view(DTYPES[dtype]).reshape(shape)


def decode_file(parsed: Parsed) -> Decoded:
    """Decode every entry of a checked file into tensors."""
    state, bits = {}, {}
    for e in parsed.entries:
        payloads = parsed.payloads(e)
        if e["kind"] == "raw":
            s, where = e["sections"]["data"], f"{parsed.where}: section {e['name']}/data"
            state[e["name"]] = _tensor(decode_bytes(s["coder"], payloads["data"], s["count"], where),
                                       e["dtype"], e["shape"], where)
        elif e["kind"] == "mask":
            state[e["name"]] = (state[e["source"]] != 0).to(DTYPES[e["dtype"]])
        else:
            weight, codebook = decode_quantized(e, payloads, parsed.where)
            state[e["name"]], state[e["name"] + CODEBOOK] = weight, codebook
            if e["bits"] is not None:
                bits[e["name"]] = e["bits"]
    return Decoded(parsed.info, state, bits)


def read_file_bytes(path: str | os.PathLike) -> bytes:
    return read_bytes(path, "a .dsz file")


def _build(decoded: Decoded, trust_code: bool, where: str) -> nn.Module:
    """The same steps as ``io.load_model``: build, re-apply a channel plan, resize, attach
    codebook/mask buffers, load strictly."""
    model = model_from_state(decoded.info, decoded.state, trust_code, where)
    for key, b in decoded.bits.items():
        mod_name, _, attr = key.rpartition(".")
        setattr(model.get_submodule(mod_name) if mod_name else model, attr + BITS, b)
    model.deepshrink_info = decoded.info
    return model.eval()


def loads(blob: bytes, *, trust_code: bool = False, where: str = "<bytes>",
          max_elements: int = MAX_ELEMENTS) -> nn.Module:
    """The model in a .dsz blob (eval mode), with ``model.deepshrink_info`` set."""
    return _build(decode_file(parse_file(blob, where, max_elements)), trust_code, where)


def _info_for(model: nn.Module, info: ModelInfo | None) -> ModelInfo:
    info = info if info is not None else getattr(model, "deepshrink_info", None)
    if not isinstance(info, ModelInfo):
        raise ConfigError("save_compressed needs the model's ModelInfo: pass info=... (e.g. the one "
                          "deepshrink.io.load_model returns) or set model.deepshrink_info")
    return info


def save_compressed(model: nn.Module, path: str | os.PathLike, info: ModelInfo | None = None) -> None:
    """Write ``model`` as a .dsz file (atomically); ``info`` defaults to ``model.deepshrink_info``."""
    atomic_write_bytes(path, dumps(model, _info_for(model, info)))


def load_compressed(path: str | os.PathLike, trust_code: bool = False,
                    max_elements: int = MAX_ELEMENTS) -> nn.Module:
    """Load a .dsz file; decoded quantized weights equal the saved ones bit for bit."""
    return loads(read_file_bytes(path), trust_code=trust_code, where=str(path), max_elements=max_elements)


def read_compressed_info(path: str | os.PathLike) -> ModelInfo:
    """Just the ModelInfo of a .dsz file (header checked, sections not decoded)."""
    return parse_file(read_file_bytes(path), str(path), check_crc=False).info
