"""Open any model file: ``.safetensors`` (plain or linearly quantized), ``.dsz``, a plain
``.pt``/``.pth``/``.bin`` state dict read with ``weights_only=True``, or a Hugging Face model
folder ``hf:DIR`` (offline, never remote code: :mod:`deepshrink.hf`).

The dispatcher above the codec and quant: it looks at the file (the .dsz magic, the quantization
record) and hands it to the reader that knows it; every reader ends in
:func:`deepshrink.modelfile.model_from_state`. Opening a file never executes code: a
``module:callable`` architecture is imported only when the caller passes ``trust_code=True`` or
names the same callable again. The model-file layer's names (``ModelInfo``, ``save_model``, ...)
are re-exported here for convenience.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .codec import load_compressed, read_compressed_info
from .data import Dataset
from .distill import with_input_stats
from .errors import DataError, FormatError, ModelError
from .hf import check_seq_len, folder_record, is_hf_spec, open_folder
from .layers import sync_layer_sizes
from .modelfile import (FORMAT_NAME, ModelInfo, build_arch, input_kind, model_from_state, read_bytes,
                        read_safetensors, resize_to_state, save_model)
from .names import DSZ_MAGIC
from .quant.ptq import is_quantized_file, load_quantized

__all__ = ["ModelInfo", "save_model", "load_model", "read_info", "load_teacher", "resize_to_state",
           "sync_layer_sizes", "build_arch", "model_from_state", "read_bytes", "FORMAT_NAME"]


def _parse_torch(path: Path) -> dict[str, torch.Tensor]:
    read_bytes(path)  # clear error for a missing file
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # never fall back to unsafe loading
        what = "it holds objects other than tensors" if "weights_only" in str(exc) else type(exc).__name__
        raise FormatError(f"{path}: refused, not a plain PyTorch state dict ({what}); "
                          "loading never executes code") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise FormatError(f"{path}: expected a mapping of names to tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_dsz(path: Path) -> bool:
    """True when the file starts with the .dsz magic (docs/FORMAT.md)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(DSZ_MAGIC)) == DSZ_MAGIC
    except OSError:
        return False  # missing or unreadable: the normal readers give the error


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Just the metadata of a deepshrink safetensors (or .dsz) file."""
    if _is_dsz(Path(path)):
        return read_compressed_info(path)
    _, info = read_safetensors(path)
    if info is None:
        raise FormatError(f"{path}: safetensors file without deepshrink metadata")
    return info


def load_model(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    kwargs: dict | None = None,
    trust_code: bool = False,
    seq_len: int | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Load a model file, or the Hugging Face folder ``hf:DIR``; returns ``(model, info)`` with the
    model in eval mode.

    ``arch`` (a zoo name, ``module:callable`` or ``hf:DIR``) is required for plain ``.pt``/``.pth``
    state dicts, which carry no architecture; naming a callable counts as trusting it; ``hf:DIR``
    takes the architecture from the folder's config (the state dict's keys with or without the
    wrapper's ``model.`` prefix). Text models only: ``seq_len`` sets the tokens per sample
    (``input_shape``; default 128 for a folder) and ``tokenizer`` the tokenizer's folder.
    """
    if is_hf_spec(os.fspath(path)):
        if arch is not None and arch != os.fspath(path):
            raise ModelError(f"{os.fspath(path)}: a Hugging Face folder names its own architecture; "
                             f"drop --model {arch}")
        model, record = open_folder(os.fspath(path), seq_len, _text(tokenizer))
        return model, ModelInfo(**record)
    path = Path(path)
    if arch is not None and is_hf_spec(arch):
        return _hf_state_dict(path, arch, seq_len, tokenizer)
    if _is_dsz(path):
        trust = trust_code or (arch is not None and arch == read_compressed_info(path).arch)
        model = load_compressed(path, trust_code=trust)
        return model, _text_options(model.deepshrink_info, seq_len, tokenizer, str(path))
    if path.suffix in (".pt", ".pth", ".bin"):
        state, info = _parse_torch(path), None
    else:
        state, info = read_safetensors(path)
    if info is not None and arch is None and is_quantized_file(info):
        model, info = load_quantized(path, trust_code=trust_code)  # the fake-quantized fx graph
        return model, _text_options(info, seq_len, tokenizer, str(path))
    if arch is not None:
        trust_code = trust_code or (info is not None and info.arch == arch) or ":" in arch
        info = info or ModelInfo(arch=arch, kwargs=kwargs or {})
        info.arch, info.kwargs = arch, kwargs if kwargs is not None else info.kwargs
    if info is None:
        raise ModelError(f"{path}: a plain state dict carries no architecture; name one (--model NAME)")
    model = model_from_state(info, state, trust_code, str(path))
    model.eval()
    return model, _text_options(info, seq_len, tokenizer, str(path))


def _text(tokenizer) -> str | None:
    return os.fspath(tokenizer) if tokenizer is not None else None


def _text_options(info: ModelInfo, seq_len: int | None, tokenizer, where: str) -> ModelInfo:
    """``seq_len`` and ``tokenizer`` applied to a text model's info (a model that takes images refuses them)."""
    if seq_len is None and tokenizer is None:
        return info
    if input_kind(info) != "tokens":
        raise ModelError(f"{where}: --seq-len and --tokenizer are for text models; this one takes images")
    if seq_len is not None:
        info.input_shape = [check_seq_len(seq_len, "--seq-len")]
    if tokenizer is not None:
        info.extra["tokenizer"] = str(Path(tokenizer).resolve())
    return info


def _hf_state_dict(path: Path, arch: str, seq_len: int | None, tokenizer) -> tuple[nn.Module, ModelInfo]:
    """A state dict (``.safetensors`` or a plain ``.pt``/``.pth``/``.bin``) of the architecture the
    folder ``arch`` = ``hf:DIR`` describes; keys without the wrapper's ``model.`` prefix get it."""
    record = folder_record(arch, seq_len, _text(tokenizer))
    if path.suffix in (".pt", ".pth", ".bin"):
        state, info = _parse_torch(path), None
    else:
        state, info = read_safetensors(path)
    if state and not all(k.startswith("model.") for k in state):
        state = {"model." + k: v for k, v in state.items()}
    if info is None:
        info = ModelInfo(**record)
    else:
        info.arch, info.kwargs, info.input_shape = record["arch"], record["kwargs"], record["input_shape"]
        info.extra.update(record["extra"])
    model = model_from_state(info, state, False, str(path))
    return model.eval(), info




def load_teacher(path, data: Dataset, arch: str | None = None, trust_code: bool = False) -> nn.Module:
    """A teacher model file for ``data``: its image shape checked, its own input normalisation
    restored when it was trained with other statistics (``with_input_stats``). A text model takes
    the data's token ids as they are (any sequence length)."""
    teacher, info = load_model(path, arch=arch, trust_code=trust_code)
    tokens = not data.train.x.is_floating_point()
    if (input_kind(info) == "tokens") != tokens:
        raise DataError(f"teacher {path}: it takes {input_kind(info)}, the data {data.name} holds "
                        f"{'token ids' if tokens else 'images'}")
    if tokens:
        return teacher
    if info.input_shape and list(info.input_shape) != list(data.input_shape):
        raise DataError(f"teacher {path}: it expects images of {list(info.input_shape)}, "
                        f"the data has {list(data.input_shape)}")
    return with_input_stats(teacher, data.mean, data.std, info.mean, info.std)
