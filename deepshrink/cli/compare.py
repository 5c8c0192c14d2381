"""``deepshrink compare``: two model files side by side in one table, with ratios.

Usage::

    deepshrink compare A B [--data SPEC] [--batch-size N] [--repeats N] [--threads N] [--no-latency] [--json]

``A`` and ``B`` are model files (``.safetensors``, ``.dsz``, ``hf:DIR``; a plain ``.pt``/``.pth``
with ``--model``, which then applies to both) that take the same input. One row per metric, with
the value of A, the value of B and B / A: params and nonzero params, the model's bytes, MACs and
nonzero MACs, memory accesses, the file's bytes on disk, the test accuracy of each on the test
split of the data it records (or ``--data``) -- on unlabelled text data the fidelity of B to A
instead, A being the reference -- and the latency at batch 1 and at ``--batch-size``: the two
models timed interleaved (A B A B ...), the median of ``--repeats`` runs each, on ``--threads``.
The lines under the table say what the quality rows measure and how the latency was timed, with
the median per-pair speedup. For example, a LeNet-5 and a copy with half its channels removed::

    deepshrink prune-channels checkpoints/baselines/lenet5.safetensors --ratio 0.5 --out half.safetensors
    deepshrink compare checkpoints/baselines/lenet5.safetensors half.safetensors --repeats 20 --threads 1
"""

from __future__ import annotations

from ..pipelines.compare import CompareRow, CompareRun, compare_files
from ..pipelines.profile import LATENCY_REPEATS
from .common import add_json_arg, add_model_file_args, json_output, model_file_options, print_json

__all__ = ["register", "format_table"]


def register(sub) -> None:
    p = sub.add_parser("compare", help="two model files side by side: params, MACs, memory, file size, accuracy, "
                                       "latency, with ratios",
                       description="Two model files side by side, one row per metric with B / A: costs at batch 1, "
                                   "file bytes, test accuracy (on unlabelled text: B's fidelity to A), latency "
                                   "timed interleaved at batch 1 and --batch-size. --model and the other model "
                                   "options apply to both files.")
    p.add_argument("file_a", metavar="A", help="the first model file (the reference for fidelity), or hf:DIR")
    p.add_argument("file_b", metavar="B", help="the second model file, or hf:DIR; ratios are B / A")
    p.add_argument("--data", help="data spec both models are evaluated on (default: the one each file records)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=32, metavar="N",
                   help="the second batch size latency is measured at, besides batch 1 (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=LATENCY_REPEATS, metavar="N",
                   help="timed runs of each model per batch size, interleaved A B A B ... (default: %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for the latency measurement (default: torch's own setting)")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the latency measurement (default: measured)")
    add_json_arg(p, "the rows with values A, B and ratio B/A; what the quality and latency rows measure")
    add_model_file_args(p)
    p.set_defaults(func=cmd_compare)


def _value(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "%":
        return f"{v * 100:.2f}%"
    if unit == "ms":
        return f"{v:.3f} ms"
    if isinstance(v, int):
        return f"{v:,}" + (" B" if unit == "B" else "")
    return f"{v:.6f}"


def _ratio(row: CompareRow) -> str:
    r = row.ratio
    return "-" if r is None else f"{r:.3f}"


def format_table(run: CompareRun) -> str:
    """The rows as one aligned table: metric, A, B, B/A."""
    cells = [("metric", "A", "B", "B/A")]
    cells += [(r.label, _value(r.a, r.unit), _value(r.b, r.unit), _ratio(r)) for r in run.rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:>{widths[3]}}" for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _latency_text(run: CompareRun) -> str:
    lat = run.latency
    speed = "; ".join(f"batch {n}: x{s['median']:.3f} (p10 {s['p10']:.3f}, p90 {s['p90']:.3f})"
                      for n, s in lat["speedup"].items())
    return (f"latency: A and B timed interleaved (A B A B ...), median of {lat['repeats']} runs each after "
            f"{lat['warmup']} warm-up runs, {lat['threads']} thread{'' if lat['threads'] == 1 else 's'}, batch "
            f"{' and '.join(map(str, lat['batches']))}, zero inputs, CPU ({run.compute['a']} / {run.compute['b']})\n"
            f"speedup time(A)/time(B), median over the pairs (> 1: B is faster): {speed}")


def cmd_compare(args) -> int:
    opts = model_file_options(args)
    with json_output(args.json):
        run = compare_files(args.file_a, args.file_b, data=args.data, batch_size=args.batch_size,
                            repeats=args.repeats, threads=args.threads, latency=args.latency, **opts)
    if args.json:
        print_json(run.to_dict())
        return 0
    print(f"A  {run.a}\nB  {run.b}\ninput {'x'.join(map(str, run.input_shape))} ({run.input_kind}), costs per "
          "sample at batch 1")
    print(format_table(run))
    print(f"quality: {run.quality}")
    print(_latency_text(run) if run.latency is not None else "latency: not measured (--no-latency)")
    for note in run.notes:
        print(f"note: {note}")
    return 0
