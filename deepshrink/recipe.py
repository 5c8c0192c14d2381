"""Compression recipes: a YAML file of ordered steps, each validated against its config dataclass.

A recipe is a list of steps (at the top level, or under ``steps:``); each step is a one-key
mapping ``{name: {option: value, ...}}`` (or the bare name, for a step without options)::

    steps:
      - prune: {sparsity: 0.8, epochs: 1}
      - quantize: {method: kmeans, bits: 5}
      - encode: {}

The step names and the dataclasses their options are checked against (:data:`STEP_KINDS`):
``prune`` (:class:`~deepshrink.prune.PruneConfig`), ``prune-channels``
(:class:`~deepshrink.prune.ChannelConfig`), ``distill`` (:class:`~deepshrink.distill.DistillConfig`
and :class:`~deepshrink.pipelines.distill.StudentTraining`, plus ``teacher``: a model file, default
the recipe's input), ``quantize``/``qat``/``kmeans`` (:class:`~deepshrink.pipelines.QuantizeConfig`;
``qat`` is the linear method, ``kmeans`` the k-means one) and ``encode`` (the model written as
``.dsz``: no options), and ``compress`` (the whole Deep Compression pipeline,
:class:`~deepshrink.compress.CompressConfig`, writing a ``.dsz``; what ``deepshrink search``
writes for its choice). The fine-tuning options (``lr``, ``weight_decay``, ``augment``,
``label_smoothing``, ``optimizer``) go to :class:`~deepshrink.pipelines.defaults.Finetune`, which
the pipelines resolve them through, so a recipe's ``lr`` is the rate used. ``progress`` and
``verbose`` are the command's, not a step's.

Everything is checked before anything runs: an unknown step or key is one ConfigError naming the
step's number, its name and the key, and listing the valid keys; a value of the wrong kind, or one
the config's own ``check()`` refuses, is prefixed with the step. The file is read with
``yaml.safe_load`` only (no code from a file); a file that is not YAML, or not a list of steps, is
one FormatError naming it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .compress import CompressConfig
from .distill import DistillConfig
from .errors import ConfigError, DeepShrinkError, FormatError
from .pipelines.defaults import Finetune
from .pipelines.distill import StudentTraining
from .pipelines.quantize import QuantizeConfig
from .prune import ChannelConfig, PruneConfig

__all__ = ["Step", "Recipe", "EncodeConfig", "STEP_KINDS", "DSZ_STEPS", "load_recipe", "parse_recipe", "build_step"]

RUN_KEYS = frozenset({"progress", "verbose"})          # the command's, never a step's
FINETUNE_KEYS = tuple(f.name for f in dataclasses.fields(Finetune))


@dataclass
class EncodeConfig:
    """``encode``: the model written as ``.dsz`` (its k-means codebooks and masks entropy-coded)."""


# step name -> (config classes whose fields it takes, fixed values, defaults differing from the class's)
STEP_KINDS: dict[str, tuple[tuple[type, ...], dict, dict]] = {
    "prune": ((PruneConfig,), {}, {}),
    "prune-channels": ((ChannelConfig,), {}, {}),
    "distill": ((DistillConfig, StudentTraining), {}, {}),
    "quantize": ((QuantizeConfig,), {}, {}),
    "qat": ((QuantizeConfig,), {"method": "linear"}, {"qat_epochs": 1.0}),
    "kmeans": ((QuantizeConfig,), {"method": "kmeans"}, {}),
    "encode": ((EncodeConfig,), {}, {}),
    "compress": ((CompressConfig,), {}, {}),
}
DSZ_STEPS = ("encode", "compress")     # the steps that write a .dsz file
EXTRA_KEYS = {"distill": ("teacher",)}


@dataclass
class Step:
    """One step of a recipe: its 1-based position, name and checked options."""

    index: int
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)    # class name -> the built config
    finetune: Finetune | None = None
    teacher: str | None = None                               # distill only

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.name})"

    def config(self, cls: type):
        return self.configs[cls.__name__]

    @property
    def seed(self) -> int:
        """The step's own seed (0 when its config has none)."""
        return next((c.seed for c in self.configs.values() if hasattr(c, "seed")), 0)


@dataclass
class Recipe:
    """The ordered steps of a recipe file."""

    steps: list[Step]
    source: str = "<recipe>"

    def to_list(self) -> list[dict]:
        """The recipe as written (JSON-friendly): ``[{name: options}, ...]``."""
        return [{s.name: dict(s.options)} for s in self.steps]


def valid_keys(name: str) -> list[str]:
    classes, fixed, _ = STEP_KINDS[name]
    keys = {f.name for cls in classes for f in dataclasses.fields(cls)} | set(FINETUNE_KEYS) | set(
        EXTRA_KEYS.get(name, ()))
    if name == "encode":
        keys = set()
    return sorted(keys - RUN_KEYS - set(fixed))


def _check_type(where: str, key: str, value: Any, default: Any, annotation: str = "") -> Any:
    """``value`` in the kind of ``default`` (lists become tuples where the default is one; a mapping
    where the field's annotation allows one, as a per-layer sparsity)."""
    if default is dataclasses.MISSING or default is None or value is None:
        return value
    if isinstance(value, dict) and "dict" in str(annotation):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(value, int):
            ok = float(value).is_integer()       # epochs: 2.0 is 2, 1.5 is refused
            value = int(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {key} must be {type(default).__name__}, got {value!r}")
    return value


def _default(cls: type, name: str) -> tuple[Any, str]:
    """The field's default (MISSING when it has none) and its annotation."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default, str(f.type)
    return (f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING), str(f.type)


def build_step(index: int, name: Any, options: Any, source: str = "<recipe>") -> Step:
    """One checked :class:`Step` (every config built and checked), or one ConfigError."""
    if not isinstance(name, str) or name not in STEP_KINDS:
        raise ConfigError(f"{source}: step {index}: unknown step {name!r}; steps are {', '.join(STEP_KINDS)}")
    where = f"{source}: step {index} ({name})"
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a mapping of keys to values, got {options!r}")
    valid = valid_keys(name)
    for key in options:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid) or 'none'}")
    classes, fixed, defaults = STEP_KINDS[name]
    step = Step(index, name, dict(options))
    tune = {k: v for k, v in options.items() if k in FINETUNE_KEYS}
    for cls in classes:
        own = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in {**defaults, **options}.items() if k in own and k not in FINETUNE_KEYS}
        kw = {k: _check_type(where, k, v, *_default(cls, k)) for k, v in kw.items()}
        try:
            cfg = cls(**kw, **{k: v for k, v in fixed.items() if k in own})
            if hasattr(cfg, "check"):
                cfg.check()
        except DeepShrinkError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        step.configs[cls.__name__] = cfg
    for k, v in tune.items():
        _check_type(where, k, v, {"augment": False, "optimizer": ""}.get(k, 0.0))
    step.finetune = Finetune(**tune) if tune else None
    if "teacher" in options:
        if not isinstance(options["teacher"], str):
            raise ConfigError(f"{where}: teacher must be a model file's path, got {options['teacher']!r}")
        step.teacher = options["teacher"]
    return step


def parse_recipe(raw: Any, source: str = "<recipe>") -> Recipe:
    """A :class:`Recipe` from the loaded YAML ``raw`` (a list of steps, or ``{steps: [...]}``)."""
    if isinstance(raw, dict):
        extra = sorted(set(raw) - {"steps"})
        if extra:
            raise ConfigError(f"{source}: unknown top-level key {extra[0]!r}; a recipe holds only 'steps'")
        raw = raw.get("steps")
    if not isinstance(raw, list) or not raw:
        raise FormatError(f"{source}: not a recipe: expected a non-empty list of steps "
                          "(steps: [- prune: {...}, ...])")
    steps = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{source}: step {i}: expected one step name with its options "
                              f"(- prune: {{sparsity: 0.8}}), got {item!r}")
        (name, options), = item.items()
        steps.append(build_step(i, name, options, source))
    return Recipe(steps, source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check the recipe file ``path`` (``yaml.safe_load``: data only, never code)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the recipe ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise FormatError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    return parse_recipe(raw, str(path))
