"""The report ``deepshrink compress`` writes beside the .dsz file: markdown, one HTML page, plots.

``model.dsz`` gets ``model.report.md`` with the accuracy before and after (on the test split,
reported once) and on the validation split that made every choice, every attempt of the pipeline
(judged on the validation split), the per-layer compression table (sparsity, bits and rates per layer, as in the
Deep Compression paper) with a legend of its columns, and three PNGs: the sensitivity
scan, the nonzero weights with their shared values, and what each stage costs per nonzero weight
of each layer (:func:`stage_bits`: the fixed-width codes and indices of pruning + quantization,
then the bytes the file really stores after entropy coding; codebooks in both).
``model.report.html`` (:mod:`.html_report`) holds the same, its plots embedded: one file to open.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_open, atomic_write_text
from ..plots import plot_weight_histograms
from ..prune.sensitivity import plot_sensitivity
from .html_report import Image, Table, Text, write_html_report

__all__ = ["write_report", "report_paths", "stage_bits", "TABLE_LEGEND"]

# Under the per-layer table: what its columns mean (the (H) columns are per nonzero weight, in the
# layout the file uses, so with b = 0 the codes stream also carries the positions).
TABLE_LEGEND = [
    "Columns: **Weight Bits** is the width of one k-means code and **Index Bits** the width b of the "
    "paper's fixed-width relative index (at its best b; gaps longer than 2^b - 1 cost filler entries): "
    "pruning + quantization before entropy coding. **Weight Bits(H)** and **Index Bits(H)** are the bits "
    "the file really spends on the codes and on the positions, per nonzero weight, after entropy coding "
    "(tables included), in the file's own layout. With `b=0` in the Layout column there is no index "
    "stream: every position up to the last nonzero is stored as a code (zeros as a symbol of their "
    "own), so Weight Bits(H) also pays for the positions, can exceed Weight Bits, and Index Bits(H) is 0. "
    "Compare the sums, Weight Bits + Index Bits against Weight Bits(H) + Index Bits(H), or the rates: "
    "**Rate(P+Q)** is the fraction of the fp32 bits removed by pruning and fixed-width quantization, "
    "**Rate(P+Q+H)** the fraction removed as stored. Codebooks are outside both rates (as in the paper) "
    "but inside the file size.",
]


def report_paths(dsz: Path) -> dict[str, Path]:
    stem = dsz.with_suffix("")
    return {"markdown": Path(f"{stem}.report.md"), "scan": Path(f"{stem}.sensitivity.png"),
            "weights": Path(f"{stem}.weights.png"), "bits": Path(f"{stem}.bits.png"),
            "html": Path(f"{stem}.report.html")}


def stage_bits(rows: list[dict]) -> list[dict]:
    """What each stage costs per nonzero weight of each quantized layer (rows of
    ``CompressionReport.to_dict()["layers"]``; layers without nonzeros are left out):

    * ``fixed``: pruning + quantization with fixed-width codes and b-bit relative indices (the
      paper's scheme, the bits behind Rate(P+Q)), split as (codes, index, codebook);
    * ``stored``: the bytes the file really holds for the layer after entropy coding, split the
      same way (with b = 0 the positions ride in the codes, so the index part is 0).
    """
    out = []
    for r in rows:
        nnz = r.get("nnz")
        if not nnz or r.get("rate_pq") is None:
            continue
        wb, ib = r["weight_bits"], r["index_bits"]
        fixed = (1 - r["rate_pq"]) * 32 * r["numel"]             # entries x (Weight Bits + Index Bits)
        book = 8 * r["codebook_bytes"] / nnz
        out.append({"layer": r["layer"],
                    "fixed": (fixed * wb / (wb + ib) / nnz, fixed * ib / (wb + ib) / nnz, book),
                    "stored": (8 * r["codes_bytes"] / nnz, 8 * r["index_bytes"] / nnz, book)})
    return out


def _plot_bits(rows: list[dict], path: Path) -> None:
    """Per layer, two stacked bars: the bits per nonzero weight after pruning + fixed-width
    quantization, and those the file stores after entropy coding (:func:`stage_bits`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    stages = stage_bits(rows)
    names = [s["layer"] for s in stages]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2) + 2.6, 3.6))
    xs = torch.arange(len(names)).float().numpy()
    w = 0.38
    parts = [("codes (b=0: positions too)", "tab:blue"), ("positions (index)", "tab:orange"),
             ("codebook", "tab:gray")]
    stage_style = [("fixed", -w / 2, None, "P+Q: fixed-width codes + b-bit indices"),
                   ("stored", w / 2, "//", "P+Q+H: as stored, after entropy coding")]
    for stage, offset, hatch, _ in stage_style:
        bottom = [0.0] * len(stages)
        for i, (_, color) in enumerate(parts):
            vals = [s[stage][i] for s in stages]
            ax.bar(xs + offset, vals, w, bottom=bottom, color=color, hatch=hatch, edgecolor="white")
            bottom = [b + v for b, v in zip(bottom, vals)]
        for x, total in zip(xs + offset, bottom):
            ax.text(x, total, f"{total:.1f}", ha="center", va="bottom", fontsize=7)
    handles = [Patch(color=color, label=part) for part, color in parts]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=hatch,
                      label=f"{'right' if hatch else 'left'}: {label}") for _, _, hatch, label in stage_style]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("bits per nonzero weight")
    ax.margins(y=0.12)
    ax.set_title("What each stage costs, per layer", fontsize=10)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def _markdown_table(md: str) -> tuple[list[str], list[list[str]], list[str]]:
    """A markdown pipe table (ours: no ``|`` inside cells) as (header, rows, the lines after it)."""
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table]
    return cells[0], cells[2:], [ln for ln in lines if ln.strip() and not ln.startswith("|")]


def write_report(result, codec_report, dsz: Path, source: str, data_spec: str) -> Path:
    """Write the markdown report, the same as one HTML page, and the plots; returns the markdown path."""
    paths = report_paths(dsz)
    before, after = result.accuracy_before, result.accuracy_after
    val_before, val_after = result.val_accuracy_before, result.val_accuracy_after
    title = f"Deep Compression of `{source}`"
    bullets = [f"data: `{data_spec}`; {result.metric} on {result.test_on}: {before * 100:.2f}% -> {after * 100:.2f}% "
               f"({(after - before) * 100:+.2f} pp; reported once, never used for a choice)",
               f"{result.metric} on {result.val_on}: {val_before * 100:.2f}% -> {val_after * 100:.2f}% "
               f"({(val_after - val_before) * 100:+.2f} pp, budget -{result.max_drop} pp: "
               f"{'within' if result.within_budget else 'OVER BUDGET'}); the scan, the budget and the retries "
               "were judged on it, and the fine-tuning never saw it",
               f"{codec_report.summary()}",
               f"pipeline time {result.seconds:.0f} s; sensitivity scan on {result.scan_on}"]
    attempts_head = ["target", "sparsity", "pruned val acc", "quantized val acc", "val drop (pp)", "seconds"]
    attempts = [[f"{a.target:.1%}", f"{a.sparsity:.2%}", f"{a.val_accuracy_pruned * 100:.2f}%",
                 f"{a.val_accuracy_quantized * 100:.2f}%", f"{-a.drop_pp(val_before):+.2f}", f"{a.seconds:.0f}"]
                for a in result.attempts]
    attempts_heading = "Attempts (accuracies on the validation split)"
    layers_heading = "Per-layer compression (as in Han, Mao & Dally 2016)"
    layers_md = codec_report.to_markdown()
    lines = [f"# {title}", "", *(f"- {b}" for b in bullets), "", f"## {attempts_heading}", "",
             "| " + " | ".join(attempts_head) + " |", "|" + "---|" * len(attempts_head),
             *("| " + " | ".join(row) + " |" for row in attempts)]
    lines += ["", f"## {layers_heading}", "", layers_md, "", *TABLE_LEGEND, ""]
    images = []
    if result.scan is not None:
        plot_sensitivity(result.scan, paths["scan"], max_drop=None, title="Sensitivity scan (each layer alone)")
        images.append(("sensitivity", paths["scan"]))
    plot_weight_histograms(result.model, paths["weights"], nonzero_only=True,
                           title="Nonzero weights after pruning and k-means sharing")
    images.append(("weights", paths["weights"]))
    rows = codec_report.to_dict().get("layers", [])
    if stage_bits(rows):
        _plot_bits(rows, paths["bits"])
        images.append(("bits", paths["bits"]))
    for alt, path in images:
        lines += [f"![{alt}]({path.name})", ""]
    atomic_write_text(paths["markdown"], "\n".join(lines))
    head, body, after_table = _markdown_table(layers_md)
    write_html_report(paths["html"], title, [
        Text(bullets=bullets), Table(attempts_head, attempts, heading=attempts_heading),
        Table(head, body, heading=layers_heading, caption=" ".join(after_table), legend=TABLE_LEGEND),
        *(Image(path, alt, caption=path.name) for alt, path in images)])
    return paths["markdown"]
