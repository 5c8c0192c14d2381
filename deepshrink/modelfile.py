"""The model-file layer: the metadata record, safetensors read/write, and the one loading sequence.

A model file is a ``.safetensors`` file whose metadata entry ``deepshrink`` holds one JSON record
(:class:`ModelInfo`): the architecture spec (a zoo name and kwargs, or a ``module:callable``
string), the input shape, normalisation statistics, the accuracy when known, the history of what
was done to the model, and extras (channel plan, head plan, quantization config). The record is checked field
by field when read (:mod:`deepshrink.metadata`).

Every reader (this module's safetensors files, the .dsz codec, quantized files) rebuilds a model
the same way, :func:`model_from_state`: build the architecture (a ``module:callable`` only when
trusted), re-apply a stored channel plan and head plan, resize pruned tensors to their stored shapes, attach
mask and codebook buffers, load the state strictly. Opening any file never executes code.
The dispatcher that opens any kind of file is :mod:`deepshrink.io`, above the codec and quant.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save
from torch import nn

from . import models
from .atomic import atomic_write_bytes
from .channel_plan import PLAN_KEY, ChannelPlan, apply_plan
from .errors import DeepShrinkError, FormatError, ModelError, first_line
from .exit_heads import EXITS_KEY, ExitPlan, attach_heads
from .head_plan import HEAD_PLAN_KEY, HeadPlan, apply_head_plan
from .hf import HF_PREFIX, build_hf, is_hf_spec
from .layers import sync_layer_sizes
from .masks import hold_masks
from .metadata import INPUT_KINDS, check_record
from .names import EXTRA_BUFFER_SUFFIXES, META_KEY, MODEL_FORMAT, MODEL_FORMAT_VERSION, base_of
from .usercode import import_callable

__all__ = ["ModelInfo", "FORMAT_NAME", "save_model", "save_state", "read_bytes", "read_safetensors", "build_arch",
           "resize_to_state", "model_from_state", "input_kind", "example_input", "EXTRA_BUFFER_SUFFIXES",
           "INPUT_KINDS"]

FORMAT_NAME = MODEL_FORMAT
FORMAT_VERSION = MODEL_FORMAT_VERSION
MAX_HEADER = 100 * 1024 * 1024


@dataclass
class ModelInfo:
    """What a model file says about its model, besides the tensors."""

    arch: str                                  # zoo name, "module:callable" or "hf:ClassName"
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])   # text: [sequence length]
    mean: list[float] | None = None
    std: list[float] | None = None
    accuracy: float | None = None              # test accuracy in [0, 1], when known
    data: str | None = None                    # the data spec it was trained/evaluated on
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # later stages: masks, plans, quant; input, tokenizer

    def train_config(self) -> dict:
        """The training settings the file records (its first ``train`` entry), or {}."""
        for h in self.history:
            if h.get("op") == "train":
                return h.get("config", {})
        return {}

    def record(self, op: str, config: Any = None, *, accuracy: float | None = None, **fields: Any) -> dict:
        """Append one provenance entry to ``history`` and return it: ``{"op": op, "config": ...,
        **fields, "accuracy": ...}`` (a dataclass config is stored as its dict). ``accuracy`` (test
        accuracy after the step, in [0, 1]) is kept in the entry and becomes the file's ``accuracy``."""
        entry: dict[str, Any] = {"op": op}
        if config is not None:
            entry["config"] = asdict(config) if is_dataclass(config) and not isinstance(config, type) else config
        entry.update(fields)
        if accuracy is not None:
            entry["accuracy"] = self.accuracy = accuracy
        self.history.append(entry)
        return entry

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str, where: str) -> "ModelInfo":
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise FormatError(f"{where}: metadata is not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise FormatError(f"{where}: metadata is not a {FORMAT_NAME} record")
        if raw.get("version") != FORMAT_VERSION:
            raise FormatError(f"{where}: unsupported version {raw.get('version')!r}")
        check_record(raw, where)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _contiguous_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage: give it compact private copies
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_model(model: nn.Module, path: str | os.PathLike, info: ModelInfo) -> None:
    """Write ``model`` and ``info`` to ``path`` atomically."""
    save_state(model.state_dict(), path, info)


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike, info: ModelInfo) -> None:
    """Write the tensors ``state`` (e.g. a quantized model's integer codes) and ``info`` to ``path`` atomically."""
    blob = st_save(_contiguous_state(state), metadata={META_KEY: info.to_json()})
    atomic_write_bytes(path, blob)


def read_bytes(path: str | os.PathLike, what: str = "a model file") -> bytes:
    """The whole file; a missing file, a folder or an unreadable file is one ModelError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, not {what}") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelInfo | None]:
    """(tensors, metadata record or None) of a safetensors file; every problem a FormatError/ModelError."""
    blob = read_bytes(path)
    if len(blob) < 8:
        raise FormatError(f"{path}: too short for a safetensors file ({len(blob)} bytes)")
    n = int.from_bytes(blob[:8], "little")
    if n > min(len(blob) - 8, MAX_HEADER):
        raise FormatError(_foreign(path, blob)
                          or f"{path}: header length {n} exceeds the {len(blob) - 8} bytes present")
    try:
        header = json.loads(blob[8:8 + n])
        tensors = st_load(blob)
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: corrupt safetensors file ({exc})") from None
    meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    text = meta.get(META_KEY)
    return tensors, (ModelInfo.from_json(text, str(path)) if text else None)


def _foreign(path, blob: bytes) -> str | None:
    """What a file that is not safetensors at all is, in words (None: maybe a damaged one)."""
    onnx_start = blob[:1] == b"\x08" and 0 < blob[1] < 32 and blob[2] in b"\x12\x1a\x3a"   # ModelProto fields 1, 2|3|7
    if str(path).lower().endswith(".onnx") or onnx_start:
        return (f"{path}: is an ONNX file, which deepshrink commands cannot load; run it with onnxruntime, "
                "or pass the .safetensors model it was exported from")
    if blob[8:9] != b"{":
        return (f"{path}: is not a model file deepshrink reads (.safetensors, .dsz, or a .pt/.pth/.bin state dict"
                + ("; a zip archive, as torch.save writes: name it .pt" if blob[:4] == b"PK\x03\x04" else "") + ")")
    return None


MAX_ARCH_ELEMENTS = 1 << 28   # parameters + buffers of a zoo architecture built from a file's kwargs


def input_kind(info: ModelInfo) -> str:
    """``"tokens"`` (int64 token ids, ``input_shape`` = [sequence length]) or ``"images"``: the
    file's ``extra["input"]``, else tokens for a Hugging Face architecture and images otherwise."""
    kind = info.extra.get("input")
    return kind if kind in INPUT_KINDS else ("tokens" if is_hf_spec(info.arch) else "images")


def example_input(info: ModelInfo, shape: tuple[int, ...] | list[int] | None = None) -> torch.Tensor:
    """An input the model accepts: ``shape`` (default batch 1 of ``info.input_shape``); zeros
    (float32) for images; for text models int64 token ids that fill the whole sequence (id 0, or
    id 1 where 0 is the recorded pad id, so that no position is padding)."""
    shape = tuple(shape) if shape is not None else (1, *info.input_shape)
    if input_kind(info) != "tokens":
        return torch.zeros(shape, dtype=torch.float32)
    pad = info.kwargs.get("pad_id") if isinstance(info.kwargs, dict) else None
    return torch.full(shape, 1 if pad == 0 else 0, dtype=torch.int64)


def build_arch(info: ModelInfo, trust_code: bool, where: str) -> nn.Module:
    """Build the architecture an info names; ``module:callable`` only when trusted.

    A zoo architecture is first built on the meta device (no memory) to bound its size, since a
    file's kwargs could ask for any width; kwargs the constructor refuses are one ModelError.
    ``hf:ClassName`` is a transformers class built from the recorded config (:func:`deepshrink.hf.build_hf`):
    looked up on the transformers module only, never remote code, so it needs no trust."""
    if is_hf_spec(info.arch):
        return build_hf(info.arch[len(HF_PREFIX):], info.kwargs, where)
    if info.arch in models.REGISTRY:
        factory = models.REGISTRY[info.arch]
        with torch.device("meta"):
            size = sum(t.numel() for t in _construct(factory, info, where).state_dict().values())
        if size > MAX_ARCH_ELEMENTS:
            raise ModelError(f"{where}: metadata field 'kwargs' {info.kwargs} makes {info.arch!r} hold {size} "
                             f"values, more than {MAX_ARCH_ELEMENTS}")
        return _construct(factory, info, where)
    if ":" in info.arch:
        if not trust_code:
            raise ModelError(
                f"{where}: the architecture is built by code {info.arch!r}; opening a file never "
                "imports code, pass trust_code=True (CLI: --trust-code) if you trust it")
        return _construct(import_callable(info.arch, ModelError, where), info, where)
    raise ModelError(f"{where}: unknown architecture {info.arch!r}")


def _construct(factory, info: ModelInfo, where: str) -> nn.Module:
    try:
        model = factory(**info.kwargs)
    except DeepShrinkError:
        raise
    except Exception as exc:  # the constructor's own refusal of bad kwargs: TypeError, ValueError, ...
        first = first_line(exc)
        raise ModelError(f"{where}: cannot build {info.arch!r} with kwargs {info.kwargs} "
                         f"({type(exc).__name__}: {first})") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{where}: {info.arch!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor], where: str = "state") -> bool:
    """Give every parameter/buffer of ``model`` the shape stored in ``state`` (pruned layers).

    A pruned tensor keeps its number of dimensions and has no empty dimension; anything else is a
    ModelError naming the tensor. Returns whether any tensor changed shape."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    resized = False
    for key, value in state.items():
        cur = own.get(key)
        if cur is None or cur.shape == value.shape:
            continue
        if value.dim() != cur.dim() or (value.numel() == 0 and cur.numel() != 0):
            raise ModelError(f"{where}: tensor {key!r} has shape {list(value.shape)}, the architecture's is "
                             f"{list(cur.shape)} (a pruned tensor keeps its dimensions, none of them empty)")
        resized = True
        mod_name, _, attr = key.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        new = torch.empty(value.shape, dtype=cur.dtype)
        if isinstance(cur, nn.Parameter):
            setattr(mod, attr, nn.Parameter(new, requires_grad=cur.requires_grad))
        else:
            mod.register_buffer(attr, new)
        sync_layer_sizes(mod)
    return resized


def model_from_state(info: ModelInfo, state: dict[str, torch.Tensor], trust_code: bool, where: str,
                     transform: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """Build the architecture ``info`` names, re-apply a stored channel plan, resize to the stored
    shapes, attach mask/codebook buffers and load ``state`` strictly: the one loading sequence of
    every reader (safetensors, .dsz, quantized files). ``transform`` (e.g. inserting fake
    quantizers) runs on the built model before it is resized and loaded."""
    model = build_arch(info, trust_code, where)
    _attach_exit_heads(model, info, where)     # before the plan: it may cut the heads' inputs too
    _apply_stored_plan(model, info, where, PLAN_KEY, ChannelPlan, apply_plan)
    _apply_stored_plan(model, info, where, HEAD_PLAN_KEY, HeadPlan, apply_head_plan)
    if transform is not None:
        model = transform(model)
    resized = resize_to_state(model, state, where)
    _attach_extra_buffers(model, state)
    missing, unexpected = _diff_keys(model, state)
    if missing or unexpected:
        raise ModelError(f"{where}: tensors do not match architecture {info.arch!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{where}: {str(exc).splitlines()[-1].strip()}") from None
    if resized:
        _check_forward(model, info, where)
    hold_masks(model)  # pruned weights stay zero under any optimizer (deepshrink/masks.py)
    return model


def _check_forward(model: nn.Module, info: ModelInfo, where: str) -> None:
    """One batch-1 forward of zeros (token ids for text models): stored shapes that changed must
    still fit together."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input(info))
    except DeepShrinkError:
        raise
    except Exception as exc:  # shape mismatches surface as RuntimeError, ValueError, IndexError ...
        first = first_line(exc)
        raise ModelError(f"{where}: the stored tensor shapes do not fit together in {info.arch!r} "
                         f"({type(exc).__name__}: {first})") from None
    finally:
        model.train(training)


def _attach_exit_heads(model: nn.Module, info: ModelInfo, where: str) -> None:
    """Build the exit heads an early-exit file records (``extra["exits"]``, :mod:`deepshrink.exit_heads`)
    as the model's child ``exit_heads``, so that their stored tensors load with the model's."""
    raw = info.extra.get(EXITS_KEY)
    if raw is not None:
        attach_heads(model, ExitPlan.from_dict(raw, where), where)


def _apply_stored_plan(model: nn.Module, info: ModelInfo, where: str, key: str, plan_cls, apply) -> None:
    """Re-apply a plan the file keeps in ``extra[key]`` to the fresh architecture: a structured-pruning
    channel plan (``channel_plan``) or a transformer's head/FFN plan (``head_plan``, :mod:`deepshrink.head_plan`)."""
    raw = info.extra.get(key)
    if raw is None:
        return
    try:
        apply(model, plan_cls.from_dict(raw, f"{where}: {key}"))
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _attach_extra_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in state.items():
        if key in own or not key.endswith(EXTRA_BUFFER_SUFFIXES):
            continue
        mod_name, _, attr = key.rpartition(".")
        try:
            mod = model.get_submodule(mod_name) if mod_name else model
        except AttributeError:
            continue  # reported as an unexpected key below
        base = next(b for b in (base_of(attr, s) for s in EXTRA_BUFFER_SUFFIXES) if b is not None)
        if isinstance(getattr(mod, base, None), torch.Tensor):
            mod.register_buffer(attr, torch.empty_like(value))


def _diff_keys(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)
