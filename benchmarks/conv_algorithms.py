"""The convolution-algorithm table (issue #20 item 3) for every conv layer of the LeNet-5 and
ResNet-20 baselines at batch 1: the direct loop, im2col + GEMM, kn2row, Winograd F(2x2, 3x3) and
FFT (deepshrink.convalgo), each run on the layer's real input (one forward of a seeded standard
normal image): max abs error against F.conv2d, workspace bytes predicted by formula and measured
(peak bytes through torch's CPU allocator, minus the output), median time, F.conv2d's time beside.

    .venv/bin/python benchmarks/conv_algorithms.py [--repeats 5] [--threads 1]

The same table as ``deepshrink conv-table checkpoints/baselines/NAME.safetensors --json``.
Writes benchmarks/results/conv_algorithms.json. Downloads nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _results import ROOT, baseline_path, command_from_args, write_result

from deepshrink.convalgo import NAMES
from deepshrink.pipelines.conv_table import conv_table_file

MODELS = ("lenet5", "resnet20")


def _summary_rows(name: str, run) -> list[list]:
    rows = []
    for algo, s in run.summary().items():
        ratios = [r.time_ms / layer.reference_ms for layer in run.layers for r in layer.rows
                  if r.algorithm == algo and r.time_ms is not None]
        rows.append([name, algo, f"{s['run']}/{s['layers']}",
                     "-" if s["worst_max_abs_error"] is None else f"{s['worst_max_abs_error']:.2e}",
                     f"{s['workspace_equal']}/{s['run']}",
                     "-" if s["workspace_max_rel_gap"] is None else f"{s['workspace_max_rel_gap'] * 100:.2f}%",
                     len(s["fastest_on"]), "-" if not ratios else round(statistics.median(ratios), 2)])
    return rows


def _layer_rows(name: str, run) -> list[list]:
    rows = []
    for layer in run.layers:
        cs = layer.shape
        shape = (f"{cs.c}x{cs.h}x{cs.w} -> {cs.k}x{cs.p}x{cs.q}, {cs.r}x{cs.s}/s{cs.stride[0]}/p{cs.padding[0]}"
                 + (f"/g{cs.groups}" if cs.groups > 1 else ""))
        for r in layer.rows:
            if r.time_ms is None:
                rows.append([name, layer.name, shape, r.algorithm, f"no: {r.reason}", "-", "-", "-", "-"])
                continue
            rows.append([name, layer.name, shape, r.algorithm, "fastest" if r.algorithm == layer.fastest() else "",
                         f"{r.max_abs_error:.2e}", r.workspace_predicted, r.workspace_measured,
                         f"{r.time_ms:.3f} ({layer.reference_ms:.3f})"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per algorithm and layer (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing (default: 1)")
    args = p.parse_args(argv)
    runs, summary_rows, layer_rows, seconds = {}, [], [], {}
    for name in MODELS:
        start = time.perf_counter()
        run = conv_table_file(baseline_path(name), batch_size=1, repeats=args.repeats, threads=args.threads)
        seconds[name] = time.perf_counter() - start
        runs[name] = run
        summary_rows += _summary_rows(name, run)
        layer_rows += _layer_rows(name, run)
        print(f"{name}: {len(run.layers)} conv layers, input {'x'.join(map(str, run.input_shape))}, "
              f"{seconds[name]:.1f} s")
        for algo, s in run.summary().items():
            if s["run"]:
                print(f"  {algo:<9} run on {s['run']}/{s['layers']}, worst |err| {s['worst_max_abs_error']:.2e}, "
                      f"workspace predicted = measured on {s['workspace_equal']}/{s['run']}, fastest on "
                      f"{len(s['fastest_on'])}: {', '.join(s['fastest_on']) or '-'}")
            else:
                print(f"  {algo:<9} run on no layer ({next(r.reason for layer in run.layers for r in layer.rows if r.algorithm == algo)})")
    all_equal = all(s["workspace_equal"] == s["run"] for run in runs.values() for s in run.summary().values())
    worst = max(s["worst_max_abs_error"] or 0.0 for run in runs.values() for s in run.summary().values())
    notes = [
        f"Batch 1, input a seeded standard-normal image; each algorithm on every conv layer's real input from one "
        f"forward; time: median of {args.repeats} runs after one warm-up, {args.threads} thread(s), F.conv2d and the "
        "five timed in turn (A B C ... A B C ...) on a shared CPU machine.",
        "Workspace: bytes beyond input, weights and output. Predicted: each algorithm's formula (deepshrink.convalgo). "
        "Measured: the peak of the call's allocations through torch's CPU allocator (profiler memory events) minus the "
        f"output's bytes. Predicted = measured on every layer and algorithm: {'yes' if all_equal else 'NO'}.",
        f"Worst max abs error against F.conv2d over both models and all algorithms: {worst:.2e} (float32).",
        "The algorithms are Python-level torch implementations (loops over taps, channels or transforms around "
        "vectorised ops and GEMMs), so their times compare the methods under one implementation style, not with "
        "F.conv2d's fused native kernels; the last column of the summary is the median over layers of time / "
        "F.conv2d time.",
        "kn2row is the accumulating variant (kn2row-aa); FFT computes a stride by subsampling; Winograd F(2x2, 3x3) "
        "takes 3x3 kernels at stride 1 only (LeNet-5's 5x5 layers and ResNet-20's strided and 1x1 ones are refused).",
    ]
    payload = {
        "title": "Convolution algorithms: exactness, workspace predicted vs measured, time (LeNet-5, ResNet-20)",
        "command": command_from_args("conv_algorithms", args),
        "table": {"columns": ["model", "algorithm", "layers run", "worst max abs error", "workspace pred = meas",
                              "largest gap", "fastest on (layers)", "median time / F.conv2d"],
                  "rows": summary_rows},
        "tables": [{"title": "Every conv layer (time ms: the algorithm's, F.conv2d's in brackets)",
                    "columns": ["model", "layer", "shape", "algorithm", "note", "max abs error", "workspace predicted B",
                                "workspace measured B", "time ms (F.conv2d)"],
                    "rows": layer_rows}],
        "notes": notes,
        "seconds": seconds,
        "runs": {name: run.to_dict() for name, run in runs.items()},
        "algorithms": list(NAMES),
    }
    path = write_result("conv_algorithms", payload)
    print(f"wrote {path.relative_to(ROOT)} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
