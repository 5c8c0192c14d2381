"""Hugging Face transformers as deepshrink models: a local folder opened offline, rebuilt from a
file's record, and wrapped so that ``model(token_ids)`` returns one tensor.

* ``hf:DIR`` names a local model folder (``config.json``, ``model.safetensors``, tokenizer files).
  It is opened with ``local_files_only=True`` and never with remote code: a ``config.json`` that
  declares ``auto_map`` (code shipped with the model) is refused, the class is looked up by name
  on the ``transformers`` module itself and must subclass ``transformers.PreTrainedModel``, and
  only safetensors weights are read (no pickle).
* A model file written from such a model records ``arch = "hf:<ClassName>"`` and
  ``kwargs = {"config": <config.to_dict()>, "pad_id": <int>}``; :func:`build_hf` rebuilds it as
  ``Class(Class.config_class.from_dict(config))`` without the folder and without importing
  anything but transformers.
* :class:`HFModel` is the thin wrapper the rest of the toolkit calls: its forward takes int64
  token ids ``(N, L)``, builds the attention mask from the pad id and returns the logits of a
  ``*For...`` head, or, for a bare encoder (``BertModel``), the sentence embedding: the mean of
  ``last_hidden_state`` over the attention mask (Reimers & Gurevych 2019, Sentence-BERT's mean
  pooling). The transformer sits under the attribute ``model``, so every state-dict key is the
  transformers key prefixed with ``model.``: the same on save and load, so files round-trip bit
  for bit.

``transformers`` is an optional extra (``pip install 'deepshrink[hf]'``), imported only inside
the functions that need it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DataError, ModelError, first_line

__all__ = ["HF_PREFIX", "DEFAULT_SEQ_LEN", "MAX_SEQ_LEN", "MAX_HF_ELEMENTS", "HFModel", "is_hf_spec",
           "require_transformers", "hf_class", "check_hf_config", "build_hf", "folder_record", "open_folder",
           "check_seq_len", "load_tokenizer", "tokenize"]

HF_PREFIX = "hf:"
DEFAULT_SEQ_LEN = 128            # tokens per text sample (padded or truncated)
LENGTH_CHUNK = 32                # rows of similar length an encoder runs together (HFModel)
MAX_SEQ_LEN = 1 << 16
MAX_HF_ELEMENTS = 1 << 31        # parameters + buffers of a transformer built from a file's config
MAX_CONFIG_BYTES = 1 << 20       # config.json
MAX_LAYERS = 1024                # num_hidden_layers and the like
KWARG_KEYS = ("config", "pad_id")
INSTALL_HINT = "install the Hugging Face extra: pip install 'deepshrink[hf]'"


def is_hf_spec(text: Any) -> bool:
    """True for ``"hf:DIR"`` (a model source) and ``"hf:ClassName"`` (a recorded architecture)."""
    return isinstance(text, str) and text.startswith(HF_PREFIX)


def require_transformers():
    """The ``transformers`` module, or one ModelError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ModelError(f"Hugging Face models need the transformers package; {INSTALL_HINT}") from None
    return transformers


class HFModel(nn.Module):
    """A transformers model called with token ids, returning one tensor.

    ``output_kind`` is ``"logits"`` for a model with a head (``(N, C)`` or ``(N, L, V)``) and
    ``"embedding"`` for a bare encoder (``(N, H)``, mean-pooled over the non-pad tokens).

    A bare encoder's batch is cut to what it holds: rows are grouped by length (``LENGTH_CHUNK`` at a
    time, the shortest together) and each group loses the columns after its last real token. Those
    columns are padding in every row of the group, masked out of attention and of the pooling, so
    each embedding is the same (up to float rounding) while short sentences padded to 128 cost what
    they hold. Traced and exported graphs keep the full length (their shapes must not depend on
    the data)."""

    def __init__(self, model: nn.Module, pad_id: int = 0):
        super().__init__()
        self.model = model
        self.pad_id = int(pad_id)
        self.output_kind = "embedding" if getattr(model, "base_model", None) is model else "logits"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.output_kind == "embedding" and ids.dim() == 2 and not _tracing():
            return self._embed_by_length(ids)
        return self._call(ids)

    def _embed_by_length(self, ids: torch.Tensor) -> torch.Tensor:
        """The pooled embeddings ``(N, H)`` of ``ids`` ``(N, L)``, computed group by group."""
        n, length = ids.shape
        positions = torch.arange(1, length + 1, device=ids.device)
        ends = ((ids != self.pad_id) * positions).amax(1) if length else ids.new_zeros(n)  # (N,) one past the last real token
        if n <= LENGTH_CHUNK:
            return self._call(ids[:, :max(1, int(ends.max()) if n else 1)])
        order = ends.argsort(stable=True)                                            # (N,) shortest first
        parts = [self._call(ids[rows, :max(1, int(ends[rows].max()))]) for rows in order.split(LENGTH_CHUNK)]
        out = torch.cat(parts)                                                       # (N, H) in sorted order
        return out[order.argsort(stable=True)]                                       # back in input order

    def _call(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()                           # (N, L): 1 on real tokens
        out = self.model(input_ids=ids, attention_mask=mask, return_dict=True)
        logits = getattr(out, "logits", None)
        if logits is not None:
            return logits
        hidden = getattr(out, "last_hidden_state", None)             # (N, L, H)
        if hidden is None:
            raise ModelError(f"{type(self.model).__name__}: its output has neither logits nor last_hidden_state")
        weights = mask.unsqueeze(-1).to(hidden.dtype)                # (N, L, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)   # (N, H)


def _tracing() -> bool:
    """Whether the call is being traced or exported (shapes must not depend on the data then)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
                or torch.fx._symbolic_trace.is_fx_symbolic_tracing())


def hf_class(name: str, where: str) -> type:
    """The model class ``name`` of the transformers module; nothing else is ever looked up."""
    transformers = require_transformers()
    if not name.isidentifier():
        raise ModelError(f"{where}: {name!r} is not a transformers class name")
    try:
        cls = getattr(transformers, name, None)
    except Exception as exc:  # a lazy attribute whose backend is missing
        raise ModelError(f"{where}: transformers cannot provide {name!r} ({type(exc).__name__})") from None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelError(f"{where}: {name!r} is not a model class of transformers (a subclass of "
                         "PreTrainedModel); only those are built, never code named by a file")
    return cls


def check_hf_config(config: Any, where: str) -> None:
    """A config record: an object that asks for no remote code, and no more than :data:`MAX_LAYERS`
    layers (``num_hidden_layers``, ``n_layer``, ...: a count that builds modules one by one, so it is
    bounded before anything is built, even on the meta device)."""
    if not isinstance(config, dict):
        raise ModelError(f"{where}: the Hugging Face config must be an object, got {type(config).__name__}")
    if "auto_map" in config:
        raise ModelError(f"{where}: the config declares 'auto_map' (code shipped with the model); "
                         "deepshrink never runs a model's own code (no trust_remote_code)")
    for key, value in config.items():
        if (key.endswith("layers") or key.endswith("n_layer")) and isinstance(value, int) and value > MAX_LAYERS:
            raise ModelError(f"{where}: the config asks for {key} = {value}, more than {MAX_LAYERS}")


def build_hf(name: str, kwargs: dict, where: str) -> HFModel:
    """``HFModel(Class(Class.config_class.from_dict(kwargs["config"])), kwargs["pad_id"])``, its size
    first measured on the meta device (nothing allocated) and bounded by :data:`MAX_HF_ELEMENTS`."""
    cls = hf_class(name, where)
    unknown = sorted(set(kwargs) - set(KWARG_KEYS))
    if unknown or "config" not in kwargs:
        raise ModelError(f"{where}: kwargs of {HF_PREFIX}{name} must be {{'config': ..., 'pad_id': ...}}, "
                         f"got keys {sorted(kwargs)}")
    check_hf_config(kwargs["config"], where)
    pad_id = kwargs.get("pad_id", 0)
    if type(pad_id) is not int or pad_id < 0:
        raise ModelError(f"{where}: kwargs 'pad_id' must be a non-negative int, got {pad_id!r}")

    def construct() -> nn.Module:
        try:
            return cls(cls.config_class.from_dict(dict(kwargs["config"])))
        except Exception as exc:  # the config's own refusal: ValueError, TypeError, AttributeError ...
            first = first_line(exc)
            raise ModelError(f"{where}: cannot build {HF_PREFIX}{name} from its config "
                             f"({type(exc).__name__}: {first})") from None

    with torch.device("meta"):
        size = sum(t.numel() for t in construct().state_dict().values())
    if size > MAX_HF_ELEMENTS:
        raise ModelError(f"{where}: the config makes {HF_PREFIX}{name} hold {size} values, more than {MAX_HF_ELEMENTS}")
    return HFModel(construct().eval(), pad_id)


def _read_config(folder: Path, where: str) -> dict:
    path = folder / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a model config")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{where}: no config.json in {folder} (not a Hugging Face model folder)") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: not a readable JSON config ({exc})") from None
    check_hf_config(raw, str(path))
    return raw


def _class_name(raw: dict, where: str) -> str:
    names = raw.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    raise ModelError(f"{where}: config.json names no class ('architectures'); save the model with "
                     "save_pretrained so the folder says what it holds")


def _folder(spec: str) -> tuple[Path, type]:
    """The folder ``hf:DIR`` names and the transformers class its config.json names."""
    folder = Path(spec[len(HF_PREFIX):] if is_hf_spec(spec) else spec)
    if not folder.is_dir():
        raise ModelError(f"{spec}: no such folder (hf:DIR names a local Hugging Face model folder)")
    return folder, hf_class(_class_name(_read_config(folder, spec), spec), spec)


def _record(spec: str, folder: Path, cls: type, config, seq_len: int | None, tokenizer: str | None) -> dict:
    """What a model file records for a model of ``cls`` with ``config`` opened from ``folder``."""
    seq_len = check_seq_len(DEFAULT_SEQ_LEN if seq_len is None else seq_len, "--seq-len")
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        raise ConfigError(f"--seq-len {seq_len}: {spec} takes at most {limit} tokens (max_position_embeddings)")
    tok_dir = Path(tokenizer) if tokenizer else (folder if _has_tokenizer(folder) else None)
    pad_id = load_tokenizer(tok_dir).pad_token_id if tok_dir is not None else config.pad_token_id
    pad_id = pad_id if isinstance(pad_id, int) and pad_id >= 0 else 0
    extra: dict[str, Any] = {"input": "tokens"}
    if tok_dir is not None:
        extra["tokenizer"] = str(tok_dir.resolve())
    return {"arch": HF_PREFIX + cls.__name__, "kwargs": {"config": config.to_dict(), "pad_id": pad_id},
            "input_shape": [seq_len], "extra": extra}


def folder_record(spec: str, seq_len: int | None = None, tokenizer: str | None = None) -> dict:
    """The record of ``hf:DIR`` without its weights (:func:`open_folder`'s second value): its
    config read offline; the architecture of a plain state dict named ``--model hf:DIR``."""
    folder, cls = _folder(spec)
    try:
        config = cls.config_class.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise ModelError(f"{spec}: cannot read its config ({type(exc).__name__}: {first})") from None
    return _record(spec, folder, cls, config, seq_len, tokenizer)


def open_folder(spec: str, seq_len: int | None = None, tokenizer: str | None = None) -> tuple[HFModel, dict]:
    """Open ``hf:DIR`` offline; returns ``(model, record)`` where ``record`` holds what a model
    file records: ``arch``, ``kwargs``, ``input_shape`` (``[seq_len]``, default
    :data:`DEFAULT_SEQ_LEN`) and ``extra`` (the input kind and, when one is found, the tokenizer's
    folder: ``tokenizer``, else DIR when it holds one). Only safetensors weights are read, as float32,
    and a checkpoint that lacks weights of the class (a head left random) is refused."""
    transformers = require_transformers()
    folder, cls = _folder(spec)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model, report = cls.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                            use_safetensors=True, output_loading_info=True,
                                            **{_dtype_kwarg(transformers): torch.float32})
    except Exception as exc:  # missing weights file, corrupt tensors, shape mismatches ...
        first = first_line(exc)
        raise ModelError(f"{spec}: cannot load {cls.__name__} ({type(exc).__name__}: {first})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    missing = sorted(report.get("missing_keys") or [])
    if missing:
        raise ModelError(f"{spec}: the checkpoint lacks weights of {cls.__name__} {missing[:5]}: they would be random")
    record = _record(spec, folder, cls, model.config, seq_len, tokenizer)
    return HFModel(model.eval(), record["kwargs"]["pad_id"]).eval(), record


def _dtype_kwarg(transformers) -> str:
    """``dtype`` (transformers >= 4.56), else its older name ``torch_dtype``."""
    try:
        major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def check_seq_len(n: Any, flag: str) -> int:
    if type(n) is not int or not 1 <= n <= MAX_SEQ_LEN:
        raise ConfigError(f"{flag} {n!r}: must be a whole number in 1..{MAX_SEQ_LEN}")
    return n


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in ``folder``, offline and without remote code; one DataError if none."""
    transformers = require_transformers()
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: no such tokenizer folder")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        first = first_line(exc)
        raise DataError(f"{folder}: cannot load a tokenizer ({type(exc).__name__}: {first})") from None
    if tok.pad_token_id is None:
        raise DataError(f"{folder}: the tokenizer has no pad token, so texts cannot be padded to one length")
    return tok


def tokenize(tok, lines: list[str], seq_len: int, chunk: int = 4096) -> torch.Tensor:
    """Token ids ``(N, seq_len)`` int64: each line padded or truncated to ``seq_len`` tokens."""
    parts = []
    for lo in range(0, len(lines), chunk):
        enc = tok(lines[lo:lo + chunk], padding="max_length", truncation=True, max_length=seq_len,
                  return_tensors="pt")
        parts.append(enc["input_ids"].to(torch.int64))
    return torch.cat(parts) if parts else torch.zeros(0, seq_len, dtype=torch.int64)
