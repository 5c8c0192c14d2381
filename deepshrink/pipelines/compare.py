"""``deepshrink compare A B`` as one call: two model files side by side, one row per metric with
the value of A, the value of B and the ratio B / A.

- **Costs** (:func:`deepshrink.profile.profile_model` on batch 1 of the input both models take,
  what ``deepshrink profile --json`` reports for each file): params and nonzero params, the
  model's bytes (the parameters, dense, each weight at its bit width), MACs and nonzero MACs,
  memory accesses (every operand of every operation, and the minimal traffic).
- **File bytes** on disk (a model folder: all its files).
- **Quality**, each model on the test split of the data it records (or ``data``), as
  ``deepshrink evaluate`` measures it: the test accuracy on labelled data; on unlabelled data
  (``text:FILE``) the fidelity of B to A, A being the reference (:mod:`deepshrink.fidelity`).
  With no data at all (neither file records any, none given) no quality row, said so.
- **Latency** at batch 1 and at ``batch_size``: both models timed interleaved (A B A B ..., by
  :func:`deepshrink.profile.compare_latency`, never in separate loops), the median of each; the
  ratio is that of the medians, and ``speedup`` the median over the pairs of time(A) / time(B).

Both models must take the same input (kind and shape); otherwise one ConfigError naming both.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..fidelity import fidelity, output_kind
from ..hf import HF_PREFIX, is_hf_spec
from ..io import ModelInfo, load_model
from ..modelfile import example_input, input_kind
from ..profile import compare_latency, profile_model
from ..profile.size import disk_bytes
from ..quant.arithmetic import arithmetic
from ..train import evaluate
from .inputs import data_for
from .profile import LATENCY_REPEATS, LATENCY_WARMUP, MAX_INPUT_ELEMENTS

__all__ = ["CompareRow", "CompareRun", "compare_files", "COST_ROWS"]

# (key, label, unit): the profiler's totals shown, in order
COST_ROWS = (("params", "params", ""), ("nonzero_params", "nonzero params", ""),
             ("bytes", "model bytes (weights at their bit width)", "B"), ("macs", "MACs", ""),
             ("nonzero_macs", "nonzero MACs", ""), ("memory_accesses", "memory accesses (per op)", ""),
             ("min_memory_accesses", "memory accesses (minimal)", ""))


@dataclass
class CompareRow:
    key: str                    # e.g. "macs", "accuracy", "latency_ms_batch_1"
    label: str                  # in words
    a: float | int | None
    b: float | int | None
    unit: str = ""              # "", "B", "%" (a fraction shown as a percentage), "ms"

    @property
    def ratio(self) -> float | None:
        """B / A; None when either is missing or A is 0."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class CompareRun:
    a: str                              # the two files as given
    b: str
    input_shape: list[int]              # per sample, shared by both
    input_kind: str                     # "images" or "tokens"
    rows: list[CompareRow]
    data: dict                          # {"a": spec or None, "b": spec or None}: each model's test data
    quality: str                        # what the quality rows measure, in words
    compute: dict                       # {"a": ..., "b": ...}: the arithmetic each model runs
    latency: dict | None = None         # how it was timed, and the speedup per batch size
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> CompareRow:
        return next(r for r in self.rows if r.key == key)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "input_shape": self.input_shape, "input_kind": self.input_kind,
                "data": self.data, "quality": self.quality, "compute": self.compute, "latency": self.latency,
                "notes": self.notes, "rows": [r.to_dict() for r in self.rows]}


@dataclass
class _Side:
    label: str
    model: nn.Module
    info: ModelInfo
    data: Dataset | None = None


def _open(src, opts: dict) -> _Side:
    model, info = load_model(src, arch=opts.get("arch"), kwargs=opts.get("model_kwargs"),
                             trust_code=opts.get("trust_code", False), seq_len=opts.get("seq_len"),
                             tokenizer=opts.get("tokenizer"))
    return _Side(os.fspath(src), model, info)


def _learns_shape(info: ModelInfo) -> bool:
    """A record that never saw data (a plain state dict): :func:`data_for` takes its shape from the data."""
    return info.mean is None and info.std is None and not info.history


def _same_input(a: _Side, b: _Side) -> None:
    ka, kb = input_kind(a.info), input_kind(b.info)
    if ka != kb or list(a.info.input_shape) != list(b.info.input_shape):
        raise ConfigError(f"{a.label} takes {ka} of shape {list(a.info.input_shape)}, {b.label} takes {kb} of "
                          f"shape {list(b.info.input_shape)}: compare needs two models that take the same input")


def _cost_rows(a: _Side, b: _Side, shape: tuple[int, ...]) -> list[CompareRow]:
    totals = []
    for side in (a, b):
        try:
            totals.append(profile_model(side.model, example_input(side.info, shape)).totals)
        except RuntimeError as exc:
            raise ConfigError(f"{side.label}: the model does not accept input of shape {list(shape)} "
                              f"({str(exc).splitlines()[0]})") from None
    rows = [CompareRow(key, label, totals[0][key], totals[1][key], unit) for key, label, unit in COST_ROWS]
    where = [s.label[len(HF_PREFIX):] if is_hf_spec(s.label) else s.label for s in (a, b)]
    rows.append(CompareRow("file_bytes", "file bytes on disk", disk_bytes(where[0]), disk_bytes(where[1]), "B"))
    return rows


def _quality(a: _Side, b: _Side) -> tuple[list[CompareRow], str]:
    if a.data is None or b.data is None:
        return [], "not measured: no data (neither the files record any nor is one given; pass --data SPEC)"
    if a.data.labelled and b.data.labelled:
        row = CompareRow("accuracy", "test accuracy", evaluate(a.model, a.data.test), evaluate(b.model, b.data.test),
                         "%")
        on = a.data.name if a.data.name == b.data.name else f"{a.data.name} (A) and {b.data.name} (B)"
        return [row], f"test accuracy on the test split of {on} ({len(a.data.test)} images)"
    fid = fidelity(b.model, a.model, b.data.test.x, kind=output_kind(b.model))
    rows = [CompareRow("fidelity_cosine_mean", "fidelity: mean cosine to A", 1.0, fid.cosine_mean),
            CompareRow("fidelity_cosine_min", "fidelity: min cosine to A", 1.0, fid.cosine_min)]
    if fid.kind == "logits":
        rows += [CompareRow("fidelity_agreement", "fidelity: top-1 agreement with A", 1.0, fid.agreement, "%"),
                 CompareRow("fidelity_kl_mean", "fidelity: mean KL from A (nats)", 0.0, fid.kl_mean)]
    return rows, (f"fidelity of B to A (A is the reference, its own values exact) on the test split of "
                  f"{b.data.name} ({len(b.data.test)} samples, {fid.kind})")


def _latency(a: _Side, b: _Side, batches: list[int], warmup: int, repeats: int,
             threads: int | None) -> tuple[list[CompareRow], dict]:
    rows, speedup, used = [], {}, None
    for n in batches:
        shape = (n, *a.info.input_shape)
        cmp = compare_latency(a.model, b.model, example_input(a.info, shape), warmup=warmup, repeats=repeats,
                              threads=threads, input_b=example_input(b.info, shape))
        rows.append(CompareRow(f"latency_ms_batch_{n}", f"latency, batch {n} (median ms)", cmp.a.median_ms,
                               cmp.b.median_ms, "ms"))
        speedup[str(n)] = {"median": cmp.ratio_median, "p10": cmp.ratio_p10, "p90": cmp.ratio_p90}
        used = cmp.a.threads
    how = {"interleaved": True, "statistic": "median", "batches": batches, "repeats": repeats, "warmup": warmup,
           "threads": used, "input": "zeros (token id 0 or 1 for text: no padding)", "speedup": speedup,
           "speedup_means": "median over the interleaved pairs of time(A) / time(B): > 1 means B is faster"}
    return rows, how


def _check(batch_size: int, repeats: int, warmup: int, threads: int | None) -> None:
    for name, value, lo in (("batch size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name} must be a whole number >= {lo}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")


def compare_files(a: str | os.PathLike, b: str | os.PathLike, *, data: str | None = None, batch_size: int = 32,
                  repeats: int = LATENCY_REPEATS, warmup: int = LATENCY_WARMUP, threads: int | None = None,
                  latency: bool = True, arch: str | None = None, trust_code: bool = False,
                  seq_len: int | None = None, tokenizer: str | os.PathLike | None = None,
                  model_kwargs: dict | None = None) -> CompareRun:
    """Compare the model files (or ``hf:DIR``) ``a`` and ``b``: costs, file bytes, quality and
    (``latency``) latency at batch 1 and ``batch_size``, timed interleaved (``repeats`` pairs after
    ``warmup``, on ``threads``). ``data``: the data both are evaluated on (default: each file's
    own). ``arch``/``trust_code``/``model_kwargs``/``seq_len``/``tokenizer`` apply to both, as in
    :func:`deepshrink.pipelines.evaluate_file`."""
    _check(batch_size, repeats, warmup, threads)
    opts = {"arch": arch, "trust_code": trust_code, "seq_len": seq_len, "tokenizer": tokenizer,
            "model_kwargs": model_kwargs}
    sa, sb = _open(a, opts), _open(b, opts)
    if not (_learns_shape(sa.info) or _learns_shape(sb.info)):
        _same_input(sa, sb)   # before any data is read: the data would only say it less clearly
    for side in (sa, sb):
        if data is not None or side.info.data is not None:
            side.data = data_for(side.info, data, side.label, trust_code)
    _same_input(sa, sb)
    sample = list(sa.info.input_shape)
    if latency and batch_size * math.prod(sample) > MAX_INPUT_ELEMENTS:   # refused before it is allocated
        raise ConfigError(f"batch size {batch_size} x input {sample}: more than the {MAX_INPUT_ELEMENTS:,} input "
                          "elements allowed; use a smaller batch size (--batch-size)")
    rows = _cost_rows(sa, sb, (1, *sample))
    quality_rows, quality = _quality(sa, sb)
    rows += quality_rows
    how = None
    if latency:
        lat_rows, how = _latency(sa, sb, sorted({1, batch_size}), warmup, repeats, threads)
        rows += lat_rows
    comp = {"a": arithmetic(sa.model).label, "b": arithmetic(sb.model).label}
    notes = [f"{s.label} computes {comp[k]}: its latency times that simulation, not integer kernels"
             for k, s in (("a", sa), ("b", sb)) if arithmetic(s.model).simulated]
    return CompareRun(sa.label, sb.label, sample, input_kind(sa.info), rows,
                      {"a": sa.data.name if sa.data else None, "b": sb.data.name if sb.data else None},
                      quality, comp, how, notes)
