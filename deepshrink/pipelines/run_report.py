"""The page ``deepshrink run`` writes beside its output: ``OUT.report.html``.

One self-contained HTML page (:mod:`.html_report`): the recipe, the ledger (:mod:`deepshrink.ledger`:
one row for the input, then one per step, with the measured latency the output file leaves out),
its flags, and the weight histograms of the final model (:func:`deepshrink.plots.plot_weight_histograms`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from ..ledger import FLAT_FLAG, FLAT_SPEEDUP, MACS_DROP, ZEROS_FLAG, ledger_cells
from ..plots import plot_weight_histograms
from .html_report import Image, Summary, Table, Text, write_html_report

__all__ = ["run_report_path", "write_run_report", "LEDGER_LEGEND"]

LEDGER_LEGEND = [
    "One row per model file: the input, then each step's output. **params**, **nonzero** and **MACs** are counted "
    "on the model; **peak mem B** is the predicted peak inference memory at batch 1 (weights and live "
    "activations); **file B** the file's bytes; **accuracy** on the test split; **latency ms** the median at "
    "batch 1 and **speedup** the row before's time over this row's, interleaved (> 1: faster). Measured times "
    "differ from run to run: the output file stores every column but these two.",
    f"Flags: **{ZEROS_FLAG}**: the nonzero parameters fell but neither the parameters nor the MACs did (a "
    f"dense kernel still multiplies the zeros); **{FLAT_FLAG}**: the MACs fell by more than {MACS_DROP:.0%} "
    f"but the speedup is under {FLAT_SPEEDUP:g}x.",
]


def run_report_path(out: str | os.PathLike) -> Path:
    """``runs/m.dsz`` -> ``runs/m.report.html``."""
    return Path(f"{Path(out).with_suffix('')}.report.html")


def write_run_report(run, model: nn.Module) -> Path:
    """Write the page of ``run`` (a :class:`~deepshrink.pipelines.run_recipe.RecipeRun`) beside its
    output; ``model``: the final model, for its weight histograms. Returns the page's path."""
    path = run_report_path(run.out)
    head, body = ledger_cells(run.rows)
    flagged = [f"{r.step}: **{f}**" for r in run.rows for f in r.flags]
    steps = [(s.label, ", ".join(f"{k}: {v}" for k, v in s.options.items()) or "defaults")
             for s in run.recipe.steps]
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        hist = Path(tmp) / "weights.png"
        plot_weight_histograms(model, hist, nonzero_only=True, title="Nonzero weights of the final model")
        return write_html_report(path, f"Recipe run: `{Path(run.out).name}`", [
            Summary([("output", f"`{os.fspath(run.out)}` ({os.path.getsize(run.out):,} bytes)"),
                     ("recipe", f"`{run.recipe.source}`"), *steps], heading="Recipe"),
            Table(head, body, heading="Ledger", legend=LEDGER_LEGEND),
            Text("Flags", bullets=flagged) if flagged else Text("Flags", ["No step was flagged."]),
            Image(hist, "weight histograms", heading="Weights of the final model"),
        ])
