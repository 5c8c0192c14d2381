"""The report ``deepshrink compress`` writes beside the .dsz file: markdown and plots.

``model.dsz`` gets ``model.report.md`` with the accuracy before and after (on the test split,
reported once) and on the validation split that made every choice, every attempt of the pipeline
(judged on the validation split), the per-layer compression table (sparsity, bits and rates per layer, as in the
Deep Compression paper), and three PNGs: the sensitivity
scan, the nonzero weights with their shared values, and the bits per weight of each layer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_open, atomic_write_text
from ..plots import plot_weight_histograms
from ..prune.sensitivity import plot_sensitivity

__all__ = ["write_report", "report_paths"]


def report_paths(dsz: Path) -> dict[str, Path]:
    stem = dsz.with_suffix("")
    return {"markdown": Path(f"{stem}.report.md"), "scan": Path(f"{stem}.sensitivity.png"),
            "weights": Path(f"{stem}.weights.png"), "bits": Path(f"{stem}.bits.png")}


def _plot_bits(rows: list[dict], path: Path) -> None:
    """Bits per nonzero weight of each layer, before and after entropy coding."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.2))
    xs = torch.arange(len(names)).float().numpy()
    w = 0.2
    series = [("weight_bits", "weight bits"), ("weight_bits_h", "weight bits (H)"),
              ("index_bits", "index bits"), ("index_bits_h", "index bits (H)")]
    for i, (key, label) in enumerate(series):
        ax.bar(xs + (i - 1.5) * w, [r.get(key) or 0 for r in rows], w, label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("bits per nonzero weight")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Deep Compression: bits per stored weight")
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def write_report(result, codec_report, dsz: Path, source: str, data_spec: str) -> Path:
    """Write the markdown report and its plots; returns the markdown path."""
    paths = report_paths(dsz)
    before, after = result.accuracy_before, result.accuracy_after
    val_before, val_after = result.val_accuracy_before, result.val_accuracy_after
    lines = [f"# Deep Compression of `{source}`", "",
             f"- data: `{data_spec}`; accuracy on {result.test_on}: {before * 100:.2f}% -> {after * 100:.2f}% "
             f"({(after - before) * 100:+.2f} pp; reported once, never used for a choice)",
             f"- accuracy on {result.val_on}: {val_before * 100:.2f}% -> {val_after * 100:.2f}% "
             f"({(val_after - val_before) * 100:+.2f} pp, budget -{result.max_drop} pp: "
             f"{'within' if result.within_budget else 'OVER BUDGET'}); the scan, the budget and the retries "
             "were judged on it, and the fine-tuning never saw it",
             f"- {codec_report.summary()}",
             f"- pipeline time {result.seconds:.0f} s; sensitivity scan on {result.scan_on}", "",
             "## Attempts (accuracies on the validation split)", "",
             "| target | sparsity | pruned val acc | quantized val acc | val drop (pp) | seconds |",
             "|---|---|---|---|---|---|"]
    for a in result.attempts:
        lines.append(f"| {a.target:.1%} | {a.sparsity:.2%} | {a.val_accuracy_pruned * 100:.2f}% | "
                     f"{a.val_accuracy_quantized * 100:.2f}% | {-a.drop_pp(val_before):+.2f} | {a.seconds:.0f} |")
    lines += ["", "## Per-layer compression (as in Han, Mao & Dally 2016)", "", codec_report.to_markdown(), ""]
    if result.scan is not None:
        plot_sensitivity(result.scan, paths["scan"], max_drop=None, title="Sensitivity scan (each layer alone)")
        lines += [f"![sensitivity]({paths['scan'].name})", ""]
    plot_weight_histograms(result.model, paths["weights"], nonzero_only=True,
                           title="Nonzero weights after pruning and k-means sharing")
    lines += [f"![weights]({paths['weights'].name})", ""]
    rows = codec_report.to_dict().get("layers", [])
    if rows:
        _plot_bits(rows, paths["bits"])
        lines += [f"![bits]({paths['bits'].name})", ""]
    atomic_write_text(paths["markdown"], "\n".join(lines))
    return paths["markdown"]
