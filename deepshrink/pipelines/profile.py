"""``deepshrink profile`` and ``deepshrink models`` as one call each: the per-layer cost table
(params, MACs, memory accesses, bits; optionally CPU latency) of a model file or zoo model, and
the totals of every zoo model.

Two sizes, labelled apart: the model's (``totals["bytes"]``: the parameters, dense, each weight
at its bit width) and the file's bytes on disk (``file_bytes``), which differ by the file's
header, integer or entropy coding, indices and masks (a .dsz file is far smaller than its model,
a decompressed copy of it far larger). A latency is labelled with the arithmetic it timed
(:func:`deepshrink.quant.arithmetic.arithmetic`): a fake-quantized model times fp32 simulation
of integer arithmetic, not integer kernels.

An example input larger than :data:`MAX_INPUT_ELEMENTS` is refused before it is allocated.

``memory=True`` adds the peak inference memory of one forward pass at a stated batch
(:mod:`deepshrink.profile.peak_memory`): predicted from the op graph, measured from the live
tensors and from the CPU allocator's own events, in total and per layer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .. import models
from ..errors import ConfigError
from ..exit_heads import EXITS_KEY, ExitPlan
from ..exits import expected_cost, heads_of, measure_stage_macs, path_costs
from ..exits.policies import decision_macs
from ..hf import HF_PREFIX, is_hf_spec
from ..io import load_model
from ..modelfile import example_input
from ..profile import measure_latency, profile_model
from ..profile.latency import LatencyStats
from ..profile.memory_table import PeakMemory
from ..profile.peak_memory import peak_memory
from ..profile.profiler import Profile
from ..profile.size import disk_bytes
from ..quant.arithmetic import arithmetic

__all__ = ["ProfileRun", "profile_file", "profile_zoo", "check_input_elements", "MAX_INPUT_ELEMENTS",
           "ZOO_INPUT", "LATENCY_WARMUP", "LATENCY_REPEATS"]

# 2^24 float32 elements are 64 MiB, and the widest layer's activations multiply that (64 channels: 4 GiB).
MAX_INPUT_ELEMENTS = 2 ** 24
ZOO_INPUT = (1, 1, 28, 28)      # a zoo model named without a file: one Fashion-MNIST image
LATENCY_WARMUP, LATENCY_REPEATS = 5, 50


@dataclass
class ProfileRun:
    label: str                          # the file, or the zoo name
    shape: tuple[int, ...]              # the example input
    profile: Profile
    latency: LatencyStats | None = None
    file_bytes: int | None = None       # the file (or model folder) on disk; None for a zoo model
    compute: str = "fp32"               # the arithmetic the model runs (and a latency times), in words
    simulated: bool = False             # integer arithmetic simulated in fp32 (fake quantization)
    early_exit: dict | None = None      # an early-exit file: expected MACs per sample from its exit shares
    memory: PeakMemory | None = None    # peak inference memory (memory=True), at its own batch


def check_input_elements(shape, what: str) -> None:
    """Refuse an example input of more than :data:`MAX_INPUT_ELEMENTS` elements (before allocating it)."""
    n = math.prod(shape)
    if n > MAX_INPUT_ELEMENTS:
        raise ConfigError(f"{what}: {n:,} elements, more than the {MAX_INPUT_ELEMENTS:,} allowed "
                          "(profiling counts per-sample costs: use batch 1)")


def profile_file(src: str | os.PathLike | None = None, *, arch: str | None = None,
                 input_shape: tuple[int, ...] | None = None, latency: bool = False, threads: int | None = None,
                 trust_code: bool = False, seq_len: int | None = None, model_kwargs: dict | None = None,
                 memory: bool = False, memory_batch: int | None = None) -> ProfileRun:
    """Profile the model in ``src`` (``arch``: the architecture of a plain state dict), or the zoo
    model or Hugging Face folder (``hf:DIR``) ``arch`` without a file. ``input_shape``: default batch
    1 of the model's input shape; a text model takes int64 token ids (``seq_len`` of them).
    ``memory``: also its peak inference memory, at batch ``memory_batch`` (default: the input's)."""
    info, where = None, None
    if src or is_hf_spec(arch):
        model, info = load_model(src or arch, arch=arch if src else None, kwargs=model_kwargs, trust_code=trust_code, seq_len=seq_len)
        default_shape, label = (1, *info.input_shape), os.fspath(src or arch)
        where = label[len(HF_PREFIX):] if is_hf_spec(label) else label
    elif arch:
        model = models.build(arch, **(model_kwargs or {}))
        default_shape, label = ZOO_INPUT, arch
    else:
        raise ConfigError("profile needs a model file or --model NAME")
    if input_shape is None:
        input_shape = default_shape
        check_input_elements(input_shape, f"{label}: its input_shape {list(input_shape[1:])}")
    else:
        check_input_elements(input_shape, f"input shape {list(input_shape)}")
    x = example_input(info, input_shape) if info is not None else torch.zeros(input_shape)
    try:
        prof = profile_model(model, x)
    except RuntimeError as exc:
        raise ConfigError(f"{label}: the model does not accept input of shape {list(input_shape)} "
                          f"({str(exc).splitlines()[0]})") from None
    lat = None
    if latency:
        lat = measure_latency(model, x, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS, threads=threads)
    how = arithmetic(model)
    return ProfileRun(label, tuple(input_shape), prof, lat, disk_bytes(where) if where else None, how.label,
                      how.simulated, _early_exit(model, info, x[:1], label),
                      _memory(model, info, x, memory_batch, label) if memory else None)


def _memory(model, info, x: torch.Tensor, batch: int | None, label: str) -> PeakMemory:
    """Peak memory of one forward at ``batch`` (default: ``x``'s own batch)."""
    if batch is not None:
        if batch < 1:
            raise ConfigError(f"--memory-batch {batch}: must be at least 1")
        shape = (batch, *x.shape[1:])
        check_input_elements(shape, f"--memory-batch {batch} (input {list(shape)})")
        if shape != tuple(x.shape):
            x = example_input(info, shape) if info is not None else torch.zeros(shape)
    try:
        return peak_memory(model, x)
    except RuntimeError as exc:
        raise ConfigError(f"{label}: the model does not accept input of shape {list(x.shape)} "
                          f"({str(exc).splitlines()[0]})") from None


def _early_exit(model, info, x: torch.Tensor, where: str) -> dict | None:
    """Expected MACs per sample of an early-exit file: each stage counted by the profiler, weighted
    by the share of validation samples that left at each exit when its thresholds were chosen."""
    raw = info.extra.get(EXITS_KEY) if info is not None else None
    if raw is None:
        return None
    plan = ExitPlan.from_dict(raw, where)
    shares = plan.notes.get("val_shares")
    if plan.policy is None or not isinstance(shares, list) or len(shares) != len(plan.heads) + 1:
        return None
    costs = measure_stage_macs(model, plan.layers, list(heads_of(model, where)), x, decision_macs(plan.policy))
    paths = path_costs(costs, plan.enabled())
    return {"layers": plan.layers, "policy": plan.policy, "thresholds": plan.thresholds, "path_macs": paths,
            "shares": shares, "shares_of": "the validation split", "expected_macs": expected_cost(shares, paths),
            "original_macs": costs.full}


def profile_zoo(input_shape: tuple[int, ...] = ZOO_INPUT) -> list[dict]:
    """``[{"name", "params", "macs"}]`` of every zoo model, in the zoo's order."""
    rows = []
    for name in models.names():
        prof = profile_model(models.build(name), torch.zeros(input_shape))
        rows.append({"name": name, "params": prof.totals["params"], "macs": prof.totals["macs"]})
    return rows
