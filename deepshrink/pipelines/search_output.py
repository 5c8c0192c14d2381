"""What ``deepshrink search`` writes beside its ``.dsz``: recipe, candidates, Pareto plot, HTML page.

For ``m.dsz``:

* ``m.recipe.yaml``: the chosen point as one ``compress`` step (per-layer sparsities, bits and
  codebook kinds, and the fine-tuning settings it was trained with), which
  ``deepshrink run m.recipe.yaml MODEL --out x.dsz`` replays to the same weights;
* ``m.search.json``: the goal, the walk's path and every fine-tuned candidate;
* ``m.pareto.png``: validation score against file size - the walk's proxy points (no
  fine-tuning), the fine-tuned candidates, the Pareto front of those and the chosen one - and
  against the measured batch-1 latency of each candidate;
* ``m.search.html``: one self-contained page of all of it (:mod:`.html_report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from ..atomic import atomic_open, atomic_write_text
from .html_report import Image, Summary, Table, Text, write_html_report

__all__ = ["output_paths", "write_outputs", "pareto_front", "recipe_steps"]


def output_paths(dsz: Path) -> dict[str, Path]:
    stem = Path(dsz).with_suffix("")
    return {"recipe": Path(f"{stem}.recipe.yaml"), "json": Path(f"{stem}.search.json"),
            "pareto": Path(f"{stem}.pareto.png"), "html": Path(f"{stem}.search.html")}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (size, score) that no other point beats in both (smaller size,
    higher score), ordered by size."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def recipe_steps(result) -> list[dict]:
    """The chosen candidate as a recipe: one ``compress`` step with everything it was trained with,
    after a ``prune-channels`` step when the search removed channels first."""
    c, cfg = result.chosen or (result.candidates[-1] if result.candidates else None), result.config
    if c is None:
        return []
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.fields.items()}
    opts = {**fields, "max_drop": cfg["max_drop"], **({"attempts": 1} if c.index >= 0 else {}),
            "prune_epochs": cfg["prune_epochs"], "centroid_epochs": cfg["centroid_epochs"], "seed": cfg["seed"]}
    for k in ("prune_lr", "augment", "val_size"):
        if cfg.get(k) is not None:
            opts[k] = cfg[k]
    steps = [{"compress": opts}]
    if cfg.get("channels") is not None:      # the channel step first, as the search ran it
        ch = {"macs_target": round(1 - cfg["channels"], 6), "epochs": cfg["prune_epochs"], "hold_out": True,
              "seed": cfg["seed"], **({"val_size": cfg["val_size"]} if cfg.get("val_size") is not None else {})}
        steps.insert(0, {"prune-channels": ch})
    return steps


def _plot(result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    pct = 100.0
    ax.plot([p["bytes"] for p in result.path], [p["proxy"] * pct for p in result.path], ".-", color="#9aa5b8",
            ms=3, lw=0.8, label="walk (proxy: no fine-tuning)")
    cands = result.candidates
    if cands:
        ax.scatter([c.file_bytes for c in cands], [c.val_score * pct for c in cands], color="#2f6fb0", zorder=3,
                   label="fine-tuned candidates")
        front = pareto_front([(c.file_bytes, c.val_score) for c in cands])
        ax.plot([cands[i].file_bytes for i in front], [cands[i].val_score * pct for i in front], "-",
                color="#2f6fb0", lw=1.2, label="Pareto front (fine-tuned)")
        bx.scatter([c.latency_ms for c in cands], [c.val_score * pct for c in cands], color="#2f6fb0", zorder=3)
        for c in cands:
            bx.annotate(f"{c.ratio:.0f}x", (c.latency_ms, c.val_score * pct), fontsize=8,
                        xytext=(4, 2), textcoords="offset points")
    if result.chosen is not None:
        ax.scatter([result.chosen.file_bytes], [result.chosen.val_score * pct], s=140, facecolors="none",
                   edgecolors="#c0392b", linewidths=2, zorder=4, label="chosen")
    floor = (result.dense_val * pct) - result.config["max_drop"]
    for a in (ax, bx):
        a.axhline(result.dense_val * pct, color="#444444", lw=0.8, ls=":", label="dense")
        a.axhline(floor, color="#c0392b", lw=0.8, ls="--", label=f"floor (-{result.config['max_drop']:g} pp)")
        a.set_ylabel(f"validation {result.metric} (%)")
        lo = min([floor - 2] + [c.val_score * pct - 1 for c in cands])
        a.set_ylim(max(lo, 0), result.dense_val * pct + 1)
    ax.set_xscale("log")
    ax.set_xlabel("file bytes (.dsz)")
    ax.set_title("accuracy vs size")
    ax.legend(fontsize=8, loc="lower right")
    bx.set_xlabel("batch-1 latency (ms, median)")
    bx.set_title("accuracy vs latency (fine-tuned; label: x smaller)")
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def _candidate_rows(result) -> list[list]:
    return [[c.index if c.index >= 0 else "defaults", c.described, f"{c.file_bytes:,}", f"{c.ratio:.1f}x", f"{c.val_score * 100:.2f}%",
             f"{-c.drop_pp:+.2f}", f"{c.score['score']:,.1f}" if c.score else None, f"{c.latency_ms:.3f}",
             "yes" if c.feasible else "no", "chosen" if result.chosen is c else ""] for c in result.candidates]


CANDIDATE_HEADER = ["path point", "per layer: sparsity, bits, codebook", "file bytes", "smaller", "validation",
                    "pp", "score", "ms (batch 1)", "within goal", ""]


def write_outputs(result, dsz: Path, src: str, data_spec: str | None) -> dict[str, Path]:
    """Write the recipe, the JSON, the plot and the HTML page beside ``dsz``; returns their paths."""
    paths = output_paths(dsz)
    steps = recipe_steps(result)
    if steps:
        header = (f"# deepshrink search on {src}: goal {result.goal}, floor -{result.config['max_drop']:g} pp\n"
                  f"# replay: deepshrink run {paths['recipe'].name} {src} --out OUT.dsz\n")
        atomic_write_text(paths["recipe"], header + yaml.safe_dump({"steps": steps}, sort_keys=False))
    atomic_write_text(paths["json"], json.dumps({"source": str(src), "data": data_spec, **result.to_dict()},
                                                 indent=2, default=str) + "\n")
    _plot(result, paths["pareto"])
    c = result.chosen
    summary = [("model", src), ("goal", result.goal), ("met", "yes" if result.met else "no"),
               ("validation", result.val_on), ("dense validation", f"{result.dense_val * 100:.2f}%"),
               ("dense test", f"{result.dense_test * 100:.2f}%"),
               ("fp32 parameters", f"{result.dense_bytes:,} B"), ("peak memory, batch 1", f"{result.dense_memory:,} B"),
               ("proxy evaluations", result.evaluations), ("seconds", f"{result.seconds:.0f}")]
    if c is not None:
        summary += [("chosen", c.described), ("file", f"{c.file_bytes:,} B ({c.ratio:.1f}x smaller)"),
                    ("validation after", f"{c.val_score * 100:.2f}% ({-c.drop_pp:+.2f} pp)"),
                    ("test after (reported once)", f"{result.test_after * 100:.2f}%"),
                    ("score", f"{c.score['score']:,.1f}")]
    sections = [Summary(summary, "Result"),
                Image(paths["pareto"], "Pareto plot", "Pareto plot",
                      "Left: validation score against file size; grey, the walk's points measured without "
                      "fine-tuning; blue, the fine-tuned candidates and their Pareto front; red ring, the chosen one. "
                      "Right: the candidates against measured batch-1 latency."),
                Table(CANDIDATE_HEADER, _candidate_rows(result), "Fine-tuned candidates",
                      "Every fine-tuned point, scored on the validation split",
                      ["**pp**: validation change against the dense model. **score**: the competition score "
                       "(deepshrink/score.py; its size term divides by the compressed size, as the write-up writes "
                       "it). Sparsity applies to the pruning targets; the output layer keeps its weights."]),
                Table(["step", "move", "bytes", "proxy"],
                      [[i, p["move"], f"{p['bytes']:,}", f"{p['proxy'] * 100:.2f}%"] for i, p in enumerate(result.path)],
                      "The walk", "One notch of one layer a step, by the least proxy score lost per byte saved")]
    if steps:
        sections.append(Text("Recipe", [f"`{paths['recipe'].name}` replays the chosen point: "
                                         f"`deepshrink run {paths['recipe'].name} {src} --out OUT.dsz`."]))
    write_html_report(paths["html"], f"deepshrink search: {Path(src).name}", sections)
    return paths
