"""Models to .dsz files and back: ``save_compressed`` / ``load_compressed`` (and bytes twins).

Every state-dict tensor becomes one header entry: a weight with a ``<name>_codebook`` sibling is
stored ``quantized`` (sparse codes + codebook, docs/FORMAT.md §4), a ``<name>_mask`` as a ``mask``
entry when it is bit for bit ``weight != 0`` of an earlier floating-point weight (quantized, or
raw: a pruned layer left out of k-means), else raw; everything else ``raw`` (its bytes, zlib'd
when smaller). Loading first checks what the file and the architecture it names will allocate
(docs/FORMAT.md §5), then rebuilds the architecture from the stored ModelInfo with
``io.build_arch`` (zoo names never import code), resizes it to the stored shapes, re-registers
codebook and mask buffers, restores ``<name>_bits`` attributes and sets ``model.deepshrink_info``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import models
from ..atomic import atomic_write_bytes
from ..errors import ConfigError, FormatError, ModelError
from ..hf import is_hf_spec
from ..modelfile import ModelInfo, build_arch, model_from_state, read_bytes  # one loading sequence with io
from ..names import BITS_SUFFIX, MASK_SUFFIX
from .container import MAX_ELEMENTS, VERSION, Parsed, pack_file, parse_file
from .entropy import decode_bytes, encode_bytes
from .quantized import Section, decode_quantized, encode_quantized
from .schema import CODEBOOK, DTYPES, UNIT, itemsize
from .sparse import DECODE_CHUNK

__all__ = ["Decoded", "dumps", "loads", "decode_file", "check_arch", "save_compressed", "load_compressed",
           "read_compressed_info", "read_file_bytes"]

MASK, BITS = MASK_SUFFIX, BITS_SUFFIX


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


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.detach().cpu().reshape(-1).contiguous().view(torch.uint8)

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


def _derived_mask(mask: torch.Tensor, source: str, state: dict, kinds: dict[str, str]) -> bool:
    """True when the reader's mask rule rebuilds ``mask`` bit for bit: ``source`` is an earlier
    floating-point tensor of the same shape stored raw or quantized, and mask == (source != 0)."""
    src = state.get(source)
    return (kinds.get(source) in ("raw", "quantized") and src.is_floating_point() and src.shape == mask.shape
            and _same_bits(mask, (src.detach() != 0).to(mask.dtype)))


def dumps(model: nn.Module, info: ModelInfo, version: int = VERSION) -> bytes:
    """The .dsz bytes of ``model``; ModelError when a nonzero weight is not in its codebook.
    ``version`` 2 writes a file that readers of format version 2 read (no bitmap layout, no
    header dictionary: docs/FORMAT.md §6)."""
    state = model.state_dict()
    quantized = {k for k in state if k + CODEBOOK in state and state[k].dtype == torch.float32}
    tensors, kinds = [], {}                                          # kinds: name -> stored kind
    for key, t in state.items():
        if key.endswith(CODEBOOK) and key[:-len(CODEBOOK)] in quantized:
            continue                                              # stored inside its weight
        if key in quantized:
            fields, sections = encode_quantized(key, t, state[key + CODEBOOK], _bits_of(model, key), version >= 3)
            tensors.append(({"name": key, "dtype": "float32", "shape": list(t.shape), "kind": "quantized",
                             **fields}, sections))
        elif key.endswith(MASK) and _derived_mask(t, key[:-len(MASK)], state, kinds):
            tensors.append(({"name": key, "dtype": _dtype_name(t), "shape": list(t.shape), "kind": "mask",
                             "source": key[:-len(MASK)]}, []))
        else:
            tensors.append(_raw(key, t))
        kinds[key] = tensors[-1][0]["kind"]
    blob = pack_file(info, tensors, version)
    try:                 # never write a file the reader refuses (at the most a caller may allow it)
        parse_file(blob, "<written>", MAX_ELEMENTS)
    except FormatError as exc:
        raise ModelError(f"the model cannot be stored as .dsz: {exc}") from None
    return blob


@dataclass
class Decoded:
    """What a .dsz file holds: the model spec, the state dict and the per-layer extras."""

    info: ModelInfo
    state: dict[str, torch.Tensor]
    bits: dict[str, int] = field(default_factory=dict)          # weight name -> weight_bits


def _tensor(data: bytes | bytearray, dtype: str, shape: list[int], where: str) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=DTYPES[dtype])
    t = torch.frombuffer(data if isinstance(data, bytearray) else bytearray(data), dtype=torch.uint8)  # no copy
    if dtype == "bool" and int(t.max()) > 1:
        raise FormatError(f"{where}: bool tensor holds bytes other than 0 and 1")
    return t.view(DTYPES[dtype]).reshape(shape)


def _mask_of(source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(source != 0)`` as ``dtype``, a chunk at a time: no full-size bool temporary."""
    out = torch.empty(source.shape, dtype=dtype)
    src, dst = source.reshape(-1), out.view(-1)
    for start in range(0, src.numel(), DECODE_CHUNK):                 # chunks, not elements
        torch.ne(src[start:start + DECODE_CHUNK], 0, out=dst[start:start + DECODE_CHUNK])
    return out


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
            state[e["name"]] = _mask_of(state[e["source"]], DTYPES[e["dtype"]])
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


def check_arch(parsed: Parsed) -> None:
    """Before decoding, what ``loads`` adds for the model (docs/FORMAT.md §5): the zoo architecture
    or transformers class (``hf:``) it builds (sized on the meta device, so nothing is allocated)
    weighs like a second copy of the tensors, so its elements plus the header's weight must stay
    within the file's limit; and
    a tensor it holds in a wider type than the file stores (a bool into an int64 buffer) is
    copied at that width, so the difference counts toward the limit. An architecture built by
    trusted code is not measured."""
    info, where = parsed.info, parsed.where
    if info.arch not in models.REGISTRY and not is_hf_spec(info.arch):   # hf: a transformers class, no code
        return
    with torch.device("meta"):
        own = build_arch(info, False, where).state_dict()
    units = sum(-(-t.numel() * t.element_size() // UNIT) for t in own.values())
    if units + parsed.header_units > parsed.limit:
        raise ModelError(f"{where}: architecture {info.arch!r} with kwargs {info.kwargs} holds {units} elements, "
                         f"above the {parsed.limit - parsed.header_units} the limit leaves for a "
                         f"{parsed.file_size}-byte file")
    wider = 0
    for e in parsed.entries:
        t = own.get(e["name"])
        if t is not None and t.element_size() > itemsize(e["dtype"]):
            wider += -(-math.prod(e["shape"]) * (t.element_size() - itemsize(e["dtype"])) // UNIT)
    if parsed.units + wider > parsed.limit:
        raise ModelError(f"{where}: architecture {info.arch!r} holds tensors of the file in wider types; with "
                         f"their copies the file weighs {parsed.units + wider} elements, above the limit "
                         f"{parsed.limit}")


def loads(blob: bytes, *, trust_code: bool = False, where: str = "<bytes>",
          max_elements: int | None = None) -> nn.Module:
    """The model in a .dsz blob (eval mode), with ``model.deepshrink_info`` set.

    ``max_elements``: the limit on what the file may make the reader allocate, in units of one
    float32 (docs/FORMAT.md §5); None (default) derives it from the file's size, so a small file
    cannot claim much memory; pass a number to trust a file further (or less)."""
    parsed = parse_file(blob, where, max_elements)
    check_arch(parsed)
    return _build(decode_file(parsed), trust_code, where)


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
                    max_elements: int | None = None) -> nn.Module:
    """Load a .dsz file; decoded quantized weights equal the saved ones bit for bit.
    ``max_elements``: see :func:`loads` (None: the default limit for the file's size)."""
    return loads(read_file_bytes(path), trust_code=trust_code, where=str(path), max_elements=max_elements)


def read_compressed_info(path: str | os.PathLike, max_elements: int | None = None) -> ModelInfo:
    """Just the ModelInfo of a .dsz file (header checked, sections not decoded; ``max_elements``:
    see :func:`loads`)."""
    return parse_file(read_file_bytes(path), str(path), max_elements, check_crc=False).info
