"""The compress report's bits plot shows what each stage really costs: the fixed-width bits of
pruning + quantization, then the bytes the file stores after entropy coding (codebooks in both),
so a b = 0 layer, whose Weight Bits(H) exceed its Weight Bits because the codes stream carries the
positions, no longer looks as if entropy coding made it worse."""

from __future__ import annotations

import html
import math
import re

import pytest
import torch
from torch import nn

from deepshrink.codec import compression_report
from deepshrink.pipelines.compress_report import TABLE_LEGEND, _plot_bits, stage_bits
from deepshrink.prune import prune_
from deepshrink.quant import KMeansConfig, kmeans_quantize_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """A pruned, k-means shared MLP's report rows: both layers coded with b = 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    prune_(model, {"0.weight": 0.95, "2.weight": 0.3}, "magnitude", "layer", 0)
    kmeans_quantize_(model, KMeansConfig(conv_bits=8, fc_bits=5))
    return compression_report(model).to_dict()["layers"]


def test_stage_bits_add_up_to_the_bytes_of_each_stage(rows):
    stages = {s["layer"]: s for s in stage_bits(rows)}
    assert sorted(stages) == ["0.weight", "2.weight"]
    for r in rows:
        s, nnz = stages[r["layer"]], r["nnz"]
        # as stored: exactly the layer's codes, index and codebook sections of the file
        assert math.isclose(sum(s["stored"]) * nnz, 8 * (r["codes_bytes"] + r["index_bytes"] + r["codebook_bytes"]))
        # fixed width: the bits behind Rate(P+Q), split as Weight Bits : Index Bits, plus the same codebook
        assert math.isclose((s["fixed"][0] + s["fixed"][1]) * nnz, (1 - r["rate_pq"]) * 32 * r["numel"])
        assert math.isclose(s["fixed"][0] * r["index_bits"], s["fixed"][1] * r["weight_bits"])
        assert s["fixed"][2] == s["stored"][2] == 8 * r["codebook_bytes"] / nnz


def test_a_b0_layer_reads_as_cheaper_after_entropy_coding_not_worse(rows):
    r = next(r for r in rows if r["layer"] == "0.weight")
    assert r["layout"] == "relative b=0" and r["weight_bits_h"] > r["weight_bits"]   # the confusing column
    s = next(s for s in stage_bits(rows) if s["layer"] == "0.weight")
    assert s["stored"][1] == 0 and sum(s["stored"]) < sum(s["fixed"])                # what the plot now shows


def test_the_plot_is_written_and_the_legend_explains_the_h_columns(rows, tmp_path):
    _plot_bits(rows, tmp_path / "bits.png")
    assert (tmp_path / "bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    legend = " ".join(TABLE_LEGEND)
    for column in ("**Weight Bits**", "**Index Bits**", "**Weight Bits(H)**", "**Rate(P+Q)**", "**Rate(P+Q+H)**"):
        assert column in legend
    assert "`b=0`" in legend and "can exceed Weight Bits" in legend


def test_layers_without_nonzeros_or_codebooks_are_left_out():
    assert stage_bits([{"layer": "a", "nnz": None, "rate_pq": None}, {"layer": "b", "nnz": 0, "rate_pq": 1.0}]) == []


def test_the_html_page_holds_what_the_markdown_does(tmp_path):
    """``write_report`` writes ``X.report.html`` beside the markdown: the same bullets, attempts and
    per-layer rows (cell for cell), the legend, and every plot the markdown links, embedded."""
    from types import SimpleNamespace

    from deepshrink.pipelines.compress_report import report_paths, write_report

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    prune_(model, {"0.weight": 0.9, "2.weight": 0.3}, "magnitude", "layer", 0)
    kmeans_quantize_(model, KMeansConfig(conv_bits=8, fc_bits=5))
    report = compression_report(model)
    attempt = SimpleNamespace(target=0.9, sparsity=0.88, val_accuracy_pruned=0.9, val_accuracy_quantized=0.89,
                              seconds=3.0, drop_pp=lambda before: (before - 0.89) * 100)
    result = SimpleNamespace(accuracy_before=0.95, accuracy_after=0.94, val_accuracy_before=0.96,
                             val_accuracy_after=0.95, metric="accuracy", test_on="test", val_on="val", max_drop=1.0,
                             within_budget=True, seconds=12, scan_on="val", attempts=[attempt], scan=None, model=model)
    md = write_report(result, report, tmp_path / "m.dsz", "<my>.safetensors", "mnist").read_text()
    page = report_paths(tmp_path / "m.dsz")["html"].read_text()
    assert "Deep Compression of <code>&lt;my&gt;.safetensors</code>" in page
    assert "OVER BUDGET" not in page and "-7.00" in md and '<td class="num">-7.00</td>' in page
    md_rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in md.splitlines()
               if ln.startswith("| ") and not ln.startswith(("| target", "| Layer"))]
    html_rows = [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
                 for tr in re.findall(r"<tr>(.*?)</tr>", page) if "<td" in tr]
    assert len(md_rows) == 4 and html_rows == md_rows     # 1 attempt, 2 layers and the total: cell for cell
    assert "<strong>Rate(P+Q+H)</strong>" in page
    images = [ln for ln in md.splitlines() if ln.startswith("![")]
    assert len(images) == 2 and page.count('<img src="data:image/png;base64,') == len(images)
