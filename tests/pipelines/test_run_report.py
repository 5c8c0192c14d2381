"""The page ``deepshrink run`` writes beside its output: the recipe, the ledger with its flags and
the final model's weight histograms, in one self-contained file (a synthetic run: no training)."""

from __future__ import annotations

import torch
from torch import nn

from deepshrink.ledger import ZEROS_FLAG, LedgerRow
from deepshrink.pipelines.run_recipe import RecipeRun
from deepshrink.pipelines.run_report import run_report_path, write_run_report
from deepshrink.recipe import Recipe, Step


def _run(tmp_path, flags=(ZEROS_FLAG,)) -> RecipeRun:
    out = tmp_path / "m<1>.dsz"
    out.write_bytes(b"x" * 1234)
    rows = [LedgerRow("input", 10_000, 2_500, 2_500, 2_400, 11_000, 0.97, 0.2),
            LedgerRow("1 prune", 10_000, 2_500, 500, 2_400, 11_000, 0.96, 0.2, 1.0, list(flags))]
    return RecipeRun(Recipe([Step(1, "prune", {"sparsity": 0.8})], "r.yaml"), out, rows)


def test_the_page_has_the_ledger_its_flags_and_the_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    run = _run(tmp_path)
    path = write_run_report(run, model)
    assert path == run_report_path(run.out) == tmp_path / "m<1>.report.html"
    page = path.read_text()
    assert "m&lt;1&gt;.dsz" in page and "<td>1 prune</td>" in page and '<td class="num">2,500</td>' in page
    assert f"1 prune: <strong>{ZEROS_FLAG}</strong>" in page and "step 1 (prune)" in page and "sparsity: 0.8" in page
    assert page.count('<img src="data:image/png;base64,') == 1 and "://" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m<1>.dsz", "m<1>.report.html"]   # no plot left over


def test_no_flags_says_so(tmp_path):
    path = write_run_report(_run(tmp_path, flags=()), nn.Linear(3, 2))
    assert "No step was flagged." in path.read_text()
