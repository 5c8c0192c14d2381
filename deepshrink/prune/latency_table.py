"""A per-layer latency lookup table, measured on this machine and cached on disk.

NetAdapt (Yang et al. 2018, "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
Applications", section 4.1) predicts a network's latency as the sum of its layers' latencies,
each looked up in a table measured once per layer shape, instead of timing every candidate
network. Here a layer's entry is the median wall time of that convolution or linear layer run
alone, on an input of the shape it sees inside the model at the batch size measured (taken from
a hooked forward), with the thread count fixed. A layer is named by its :class:`LayerSpec`, so
the same shape is measured once, whichever layer and group asks.

Channel counts are measured, not assumed: :func:`candidate_counts` walks down from the current
count in steps (every multiple of 4 by default), so the counts where the time falls in a step
(those that fill the CPU's blocked kernels, 8 or 16 channels wide) show up in the table.

The table lives in ``<cache>/latency/<hash>.json``, one file per key (model fingerprint, input
shape, batch size, runtime, threads, torch version); ``<cache>`` is the ``cache_dir`` argument,
else ``$DEEPSHRINK_CACHE``, else ``~/.cache/deepshrink``. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..errors import ConfigError
from ..profile.latency import measure_latency

__all__ = ["RUNTIMES", "LayerSpec", "LatencyTable", "layer_specs", "measure_layer", "candidate_counts",
           "model_fingerprint", "table_key", "cache_folder", "load_table", "save_table"]

RUNTIMES = ("torch",)          # the one runtime whose layers are measured
FORMAT = "deepshrink latency table"
VERSION = 1


@dataclass(frozen=True)
class LayerSpec:
    """One conv or linear layer's shape: enough to build it alone and time it."""

    kind: str                       # "Conv1d" | "Conv2d" | "Conv3d" | "Linear"
    in_channels: int
    out_channels: int
    input_shape: tuple[int, ...]    # (N, C_in, *spatial) for a conv, (..., F_in) for a linear
    out_spatial: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    @property
    def depthwise(self) -> bool:
        return self.kind != "Linear" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def with_channels(self, cin: int, cout: int) -> "LayerSpec":
        """The same layer with ``cin`` inputs and ``cout`` outputs (a depthwise conv follows ``cout``)."""
        if self.depthwise:
            cin = cout
        shape = list(self.input_shape)
        shape[-1 if self.kind == "Linear" else 1] = cin
        return replace(self, in_channels=cin, out_channels=cout, input_shape=tuple(shape),
                       groups=cout if self.depthwise else self.groups)

    @property
    def macs(self) -> int:
        if self.kind == "Linear":
            return math.prod(self.input_shape[:-1]) * self.in_channels * self.out_channels
        # N * C_out * prod(out spatial) * (C_in / groups) * prod(kernel)
        return (self.input_shape[0] * self.out_channels * math.prod(self.out_spatial)
                * (self.in_channels // self.groups) * math.prod(self.kernel))

    def signature(self) -> str:
        """The table key of this shape (stable text)."""
        return (f"{self.kind} {self.in_channels}->{self.out_channels} x{list(self.input_shape)} k{list(self.kernel)} "
                f"s{list(self.stride)} p{self.padding if isinstance(self.padding, str) else list(self.padding)} "
                f"d{list(self.dilation)} g{self.groups} b{int(self.bias)}")

    def build(self) -> tuple[nn.Module, torch.Tensor]:
        """The layer alone (random weights) and a random input of its shape."""
        if self.kind == "Linear":
            layer = nn.Linear(self.in_channels, self.out_channels, bias=self.bias)
        else:
            layer = getattr(nn, self.kind)(self.in_channels, self.out_channels, self.kernel, self.stride,
                                           self.padding, self.dilation, self.groups, self.bias)
        return layer.eval(), torch.randn(self.input_shape)


def _spec_of(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerSpec:
    if isinstance(m, nn.Linear):
        return LayerSpec("Linear", m.in_features, m.out_features, tuple(x.shape), bias=m.bias is not None)
    padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)          # "same" stays a string
    return LayerSpec(type(m).__name__, m.in_channels, m.out_channels, tuple(x.shape), tuple(y.shape[2:]),
                     tuple(m.kernel_size), tuple(m.stride), padding, tuple(m.dilation), m.groups, m.bias is not None)


_TIMED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)    # exact types: a subclass may compute otherwise


@torch.no_grad()
def layer_specs(model: nn.Module, example_input) -> dict[str, LayerSpec]:
    """Every conv/linear layer of ``model`` with the input shape it sees on ``example_input`` (first call)."""
    specs: dict[str, LayerSpec] = {}
    handles = []
    for name, m in model.named_modules():
        if type(m) in _TIMED:
            def hook(mod, args, out, name=name):
                if name not in specs and args and isinstance(args[0], torch.Tensor):
                    specs[name] = _spec_of(mod, args[0], out)
            handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        model(*(example_input if isinstance(example_input, tuple) else (example_input,)))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return specs


def measure_layer(spec: LayerSpec, threads: int, warmup: int = 3, repeats: int = 9) -> float:
    """Median milliseconds of the layer alone on ``threads`` threads."""
    layer, x = spec.build()
    return measure_latency(layer, x, warmup=warmup, repeats=repeats, threads=threads).median_ms


def candidate_counts(current: int, step: int = 4, min_channels: int = 1, max_counts: int = 64) -> list[int]:
    """Counts below ``current`` to measure, largest first: the multiples of ``step`` (doubled until
    at most ``max_counts`` remain) and ``min_channels``; the current count itself is not listed."""
    if step < 1 or max_counts < 1:
        raise ConfigError(f"count step and max counts must be >= 1 (got {step}, {max_counts})")
    while (current - 1) // step > max_counts:
        step *= 2
    counts = {c for c in range(step, current, step) if c >= min_channels}
    if min_channels < current:
        counts.add(max(1, min_channels))
    return sorted(counts, reverse=True)


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the architecture: module types and tensor shapes, not the weights."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__name__};".encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{list(t.shape)};".encode())
    return h.hexdigest()[:20]


def table_key(model: nn.Module, example_input: torch.Tensor, runtime: str, threads: int) -> dict:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)} (the ones whose layers are measured), "
                          f"got {runtime!r}")
    return {"arch": model_fingerprint(model), "input_shape": list(example_input.shape[1:]),
            "batch_size": int(example_input.shape[0]), "runtime": runtime, "threads": int(threads),
            "torch": torch.__version__}


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the tables live: ``cache_dir``, else ``$DEEPSHRINK_CACHE``, else ``~/.cache/deepshrink``; + ``latency``."""
    root = cache_dir or os.environ.get("DEEPSHRINK_CACHE") or Path.home() / ".cache" / "deepshrink"
    return Path(root).expanduser() / "latency"


@dataclass
class LatencyTable:
    """Median milliseconds by :meth:`LayerSpec.signature`, for one key; misses measured on demand."""

    key: dict
    entries: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    measured: int = 0               # entries measured since loading (0: every lookup hit the cache)

    def latency(self, spec: LayerSpec, measure: Callable[[LayerSpec], float]) -> float:
        sig = spec.signature()
        if sig not in self.entries:
            self.entries[sig] = float(measure(spec))
            self.measured += 1
        return self.entries[sig]


def _path(key: dict, cache_dir) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_folder(cache_dir) / f"{digest}.json"


def load_table(key: dict, cache_dir: str | os.PathLike | None = None) -> LatencyTable:
    """The cached table of ``key``, or an empty one (a missing, stale or unreadable file is a miss)."""
    path = _path(key, cache_dir)
    table = LatencyTable(key, {}, path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return table
    except (OSError, ValueError) as exc:
        print(f"deepshrink: warning: {path}: unreadable latency table ({exc}); measuring again",
              file=sys.stderr, flush=True)
        return table
    if (isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("version") == VERSION
            and raw.get("key") == key and isinstance(raw.get("entries"), dict)):
        table.entries = {str(k): float(v) for k, v in raw["entries"].items() if isinstance(v, (int, float))}
    return table


def save_table(table: LatencyTable) -> Path:
    """Write ``table`` (atomically) where :func:`load_table` finds it; returns the path."""
    path = table.path or _path(table.key, None)
    atomic_write_text(path, json.dumps({"format": FORMAT, "version": VERSION, "key": table.key,
                                        "entries": dict(sorted(table.entries.items()))}, indent=1))
    table.path = path
    return path
