"""Wall-clock latency: medians over repeats, and A/B comparisons measured interleaved.

``compare_latency`` runs A B A B ... so that drift in the machine's speed (thermal, other
processes) hits both sides alike, and reports the median of the per-pair ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["LatencyStats", "Comparison", "measure_latency", "compare_latency"]


@dataclass
class LatencyStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    threads: int

    @classmethod
    def of(cls, times_s: list[float], threads: int) -> "LatencyStats":
        ms = sorted(t * 1000 for t in times_s)
        # inclusive: p10/p90 stay within the measured [min, max], even for few repeats
        q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
        return cls(statistics.median(ms), q[0], q[-1], statistics.fmean(ms), ms[0], len(ms), threads)


@dataclass
class Comparison:
    a: LatencyStats
    b: LatencyStats
    ratio_median: float   # median over pairs of time(a) / time(b): > 1 means b is faster
    ratio_p10: float
    ratio_p90: float


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _timed(fn, args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _eval_mode(*fns):
    """Eval mode for the modules among ``fns`` while timing; their modes restored after."""
    # a frozen TorchScript module is an nn.Module without a training flag: nothing to switch
    mods = [(m, m.training) for m in fns if isinstance(m, nn.Module) and hasattr(m, "training")]
    for m, _ in mods:
        m.eval()
    try:
        yield
    finally:
        for m, was in mods:
            m.train(was)


def _check(warmup: int, repeats: int) -> None:
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need repeats >= 1 and warmup >= 0 (got {repeats}, {warmup})")


def measure_latency(model, example_input, warmup: int = 5, repeats: int = 30,
                    threads: int | None = None) -> LatencyStats:
    """Median and spread of ``model(example_input)`` wall time under inference mode."""
    _check(warmup, repeats)
    fn = model
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    with _threads(threads) as n, _eval_mode(fn), torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        times = [_timed(fn, args) for _ in range(repeats)]
    return LatencyStats.of(times, n)


def compare_latency(a, b, example_input, warmup: int = 5, repeats: int = 30,
                    threads: int | None = None, input_b=None) -> Comparison:
    """Time ``a`` and ``b`` interleaved on the same input (or ``input_b`` for ``b``)."""
    _check(warmup, repeats)
    fa, fb = a, b
    args_a = example_input if isinstance(example_input, tuple) else (example_input,)
    ib = example_input if input_b is None else input_b
    args_b = ib if isinstance(ib, tuple) else (ib,)
    with _threads(threads) as n, _eval_mode(fa, fb), torch.inference_mode():
        for _ in range(warmup):
            fa(*args_a)
            fb(*args_b)
        ta, tb = [], []
        for _ in range(repeats):
            ta.append(_timed(fa, args_a))
            tb.append(_timed(fb, args_b))
    ratios = sorted(x / y for x, y in zip(ta, tb))
    q = statistics.quantiles(ratios, n=10, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 9
    return Comparison(LatencyStats.of(ta, n), LatencyStats.of(tb, n), statistics.median(ratios), q[0], q[-1])
