"""``deepshrink conv-table``: for every Conv2d of a model, five convolution algorithms side by
side: exactness against ``F.conv2d``, workspace predicted and measured, time.

Usage::

    deepshrink conv-table FILE [--batch-size N] [--repeats N] [--threads N] [--json]

One table per conv layer (its shapes and options in the heading, ``F.conv2d``'s own time and
measured workspace under it), one row per algorithm: direct loop, im2col + GEMM, kn2row,
Winograd F(2x2, 3x3), FFT (:mod:`deepshrink.convalgo`); an algorithm that cannot compute the
layer says why. Then one line per algorithm over all layers: the worst error, on how many layers
the predicted workspace equals the measured, and where it is fastest. ``--json``: one object.
"""

from __future__ import annotations

from ..convalgo.table import COLUMN_MEANS, LayerTable
from ..pipelines.conv_table import ConvTableRun, conv_table_file
from .common import add_json_arg, add_model_file_args, json_output, model_file_options, print_json

__all__ = ["register", "format_layer", "format_summary"]

DEFAULT_REPEATS = 5


def register(sub) -> None:
    p = sub.add_parser("conv-table", help="five convolution algorithms on every conv layer: error vs F.conv2d, "
                                          "workspace predicted and measured, time",
                       description="For every Conv2d of the model (each on its real input from one forward of a "
                                   "seeded random batch): the direct loop, im2col + GEMM, kn2row, Winograd "
                                   "F(2x2, 3x3) and FFT, each checked against F.conv2d (max abs error), with its "
                                   "workspace predicted by formula and measured (peak bytes through torch's CPU "
                                   "allocator, minus the output), and its median time.")
    p.add_argument("file", help="model file (.safetensors, .dsz, or .pt/.pth with --model), or hf:DIR")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1, metavar="N",
                   help="samples in the input batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help="timed runs of each algorithm per layer, after one warm-up; the median is shown "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads while measuring (default: torch's own)")
    add_json_arg(p, "every layer's shapes and rows, what each column measures, and the summary per algorithm")
    add_model_file_args(p)
    p.set_defaults(func=cmd_conv_table)


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_layer(layer: LayerTable) -> str:
    """One layer: a heading with its shapes, then one aligned row per algorithm."""
    cs = layer.shape
    head = (f"{layer.name}: input {'x'.join(map(str, (cs.n, cs.c, cs.h, cs.w)))}, weight "
            f"{'x'.join(map(str, (cs.k, cs.cg, cs.r, cs.s)))}, stride {cs.stride[0]}x{cs.stride[1]}, padding "
            f"{cs.padding[0]}x{cs.padding[1]}, dilation {cs.dilation[0]}x{cs.dilation[1]}, groups {cs.groups} -> "
            f"output {'x'.join(map(str, cs.output_shape))}; F.conv2d {layer.reference_ms:.3f} ms, "
            f"{layer.reference_workspace:,} B measured beyond its output")
    cells = [("algorithm", "max abs error", "workspace predicted B", "measured B", "time ms", "note")]
    for r in layer.rows:
        note = r.reason if r.reason else ("fastest" if r.algorithm == layer.fastest() else "")
        cells.append((r.algorithm, _num(r.max_abs_error, ".2e"), _num(r.workspace_predicted, ","),
                      _num(r.workspace_measured, ","), _num(r.time_ms, ".3f"),
                      note if r.supported else f"unsupported: {note}"))
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = ["  ".join([c[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(c[1:5], widths[1:])), c[5]]).rstrip()
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([head] + ([f"  note: {layer.note}"] if layer.note else []) + lines)


def format_summary(run: ConvTableRun) -> str:
    lines = [f"summary over {len(run.layers)} conv layer{'s' if len(run.layers) != 1 else ''}:"]
    for algo, s in run.summary().items():
        if not s["run"]:
            lines.append(f"  {algo:<9} run on no layer")
            continue
        gap = s["workspace_max_rel_gap"]
        lines.append(f"  {algo:<9} run on {s['run']}/{s['layers']} layers, worst max abs error "
                     f"{s['worst_max_abs_error']:.2e}, workspace predicted = measured on {s['workspace_equal']}/"
                     f"{s['run']} (largest gap {gap * 100:.2f}%), fastest on {len(s['fastest_on'])}"
                     + (f" ({', '.join(s['fastest_on'])})" if s["fastest_on"] else ""))
    return "\n".join(lines)


def cmd_conv_table(args) -> int:
    opts = model_file_options(args)
    with json_output(args.json):
        run = conv_table_file(args.file, batch_size=args.batch_size, repeats=args.repeats, threads=args.threads,
                              **opts)
    if args.json:
        print_json(run.to_dict())
        return 0
    print(f"{run.label}  input {'x'.join(map(str, run.input_shape))} ({run.input}), median of "
          f"{run.repeats} run{'s' if run.repeats != 1 else ''}, {run.threads} thread{'s' if run.threads != 1 else ''}")
    if not run.layers:
        print("no Conv2d layer in this model's forward")
        return 0
    for layer in run.layers:
        print()
        print(format_layer(layer))
    print()
    print(format_summary(run))
    print("columns: " + "; ".join(f"{k}: {v}" for k, v in COLUMN_MEANS.items()))
    return 0
