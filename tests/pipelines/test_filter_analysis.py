"""Li et al. 2017's filter analyses (deepshrink/pipelines/filter_analysis.py) on a tiny conv net defined
here, checked against oracles: ratio 0 is the unpruned model, "largest" drops exactly the largest-L1
filters, greedy and independent scores equal a brute-force recomputation, and sorting is a
permutation whose first-k cut equals the unsorted model cut by importance."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.pipelines.filter_analysis import (FilterAnalysisConfig, analyse_greedy, analyse_norms,
                                                  analyse_selection, conv_groups, first_keep, run_filter_analysis,
                                                  selection_keep)
from deepshrink.data import with_validation
from deepshrink.prune import sort_channels
from deepshrink.prune.channel import choose_channels, score_groups
from deepshrink.prune.greedy import greedy_l1_scores
from deepshrink.prune.plan import apply_plan, make_plan
from deepshrink.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    """Three conv layers with BatchNorm, then a linear classifier: three prunable conv groups."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.conv3, self.bn3 = nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 4 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def trained(make_dataset):
    torch.manual_seed(0)
    ds = make_dataset(n_train=200, n_test=40, noise=1.0)
    model = TinyNet()
    fit(model, ds, TrainConfig(epochs=2, lr=0.05, augment=False, progress=False, verbose=False))
    model.eval()
    return model, with_validation(ds, 40)


def _example():
    return torch.zeros(1, 1, 8, 8)


def test_ratio_zero_is_the_unpruned_accuracy_and_every_output_is_written(trained, tmp_path):
    model, ds = trained
    before = copy.deepcopy(model.state_dict())
    cfg = FilterAnalysisConfig(ratios=(0.0, 0.5), retrain_epochs=1, random_draws=2, progress=False, verbose=False)
    run = run_filter_analysis(model, ds, cfg, tmp_path / "fa")
    rep = run.report
    assert rep["split"] == "validation" and rep["val_images"] == 40
    a, dense = rep["analyses"], rep["dense"]
    for rec in a["sensitivity"]["layers"].values():
        assert rec["accuracy"][0] == dense and rec["accuracy_retrained"][0] == dense
        assert rec["kept"][0] == rec["channels"] and len(rec["accuracy_retrained"]) == 2
    assert set(a["sensitivity"]["layers"]) == {"conv1", "conv2", "conv3"}
    assert a["greedy"]["independent"][0] == a["greedy"]["greedy"][0] == dense
    assert a["selection"]["smallest"][0] == a["selection"]["random"][0] == a["selection"]["largest"][0] == dense
    assert a["sorting"]["unsorted"][0] == a["sorting"]["sorted"][0] == dense
    assert a["sorting"]["sorted_dense"] == dense                       # sorting changes no prediction
    assert len(a["selection"]["random_draws"][1]) == 2
    saved = json.loads(run.json_path.read_text())
    assert saved["analyses"]["greedy"] == a["greedy"] and saved["split"] == "validation"
    assert set(run.plots) == {"sensitivity", "sensitivity_retrained", "norms", "greedy", "selection", "sorting"}
    for png in run.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k, v in model.state_dict().items():                          # the model itself is left as it was
        assert torch.equal(v, before[k]), k


def test_largest_removes_exactly_the_largest_l1_filters(trained):
    model, _ = trained
    groups, ids = conv_groups(model, _example())
    by_name = {g.name: g.id for g in groups if g.id in ids}
    largest = selection_keep(groups, ids, 0.5, "largest")
    smallest = selection_keep(groups, ids, 0.5, "smallest")
    for name, gid in by_name.items():
        l1 = getattr(model, name).weight.detach().abs().sum((1, 2, 3))      # (C,) brute force
        n = round(0.5 * len(l1))
        order = torch.argsort(l1)                                           # ascending
        assert largest[gid].tolist() == sorted(order[:n].tolist()), name     # the largest ones are gone
        assert smallest[gid].tolist() == sorted(order[-n:].tolist()), name
    a = selection_keep(groups, ids, 0.5, "random", seed=3)
    assert {k: v.tolist() for k, v in a.items()} == {k: v.tolist() for k, v in
                                                     selection_keep(groups, ids, 0.5, "random", seed=3).items()}


def _hand_built() -> TinyNet:
    """conv1's filter 0 is its weakest; conv2's filter 0 reads almost only channel 0 with large kernels,
    so it is the strongest filter counted independently but the weakest once channel 0 is gone."""
    torch.manual_seed(1)
    net = TinyNet().eval()
    with torch.no_grad():
        net.conv1.weight.copy_(torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 3, 3) * 0.1)
        w2 = torch.full((3, 4, 3, 3), 0.05)
        w2[0, 0] = 2.0                       # filter 0: big kernels on input channel 0 only
        w2[1] *= torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1)
        w2[2] *= torch.tensor([4.0, 3.0, 2.0, 1.0]).view(4, 1, 1)
        net.conv2.weight.copy_(w2)
        net.conv3.weight.copy_(torch.randn(2, 3, 3, 3))
    return net


def test_greedy_and_independent_scores_equal_a_brute_force_recomputation():
    net = _hand_built()
    groups, ids = conv_groups(net, _example())
    gid = {g.name: g.id for g in groups if g.id in ids}
    w1, w2, w3 = (getattr(net, f"conv{i}").weight.detach().abs() for i in (1, 2, 3))
    indep = score_groups(groups, "l1")
    for name, w in (("conv1", w1), ("conv2", w2), ("conv3", w3)):         # every kernel counted
        assert torch.allclose(indep[gid[name]], w.sum((1, 2, 3)))
    scores, keep = greedy_l1_scores(groups, ids, 0.5)
    # brute force, layer by layer: only the kernels reading the channels kept so far
    kept1 = sorted(torch.argsort(w1.sum((1, 2, 3)), descending=True)[:2].tolist())
    s2 = torch.stack([sum(w2[j, c].sum() for c in kept1) for j in range(3)])
    kept2 = sorted(torch.argsort(s2, descending=True)[:2].tolist())
    s3 = torch.stack([sum(w3[j, c].sum() for c in kept2) for j in range(2)])
    kept3 = sorted(torch.argsort(s3, descending=True)[:1].tolist())
    assert torch.allclose(scores[gid["conv1"]], w1.sum((1, 2, 3)))
    assert torch.allclose(scores[gid["conv2"]], s2) and torch.allclose(scores[gid["conv3"]], s3)
    assert [keep[gid[n]].tolist() for n in ("conv1", "conv2", "conv3")] == [kept1, kept2, kept3]
    assert kept1 == [2, 3] and 0 not in kept2                              # greedy drops conv2's filter 0 ...
    alone = choose_channels(groups, {gid["conv2"]: indep[gid["conv2"]]}, 0.5)[gid["conv2"]]
    assert 0 in alone.tolist()                                                # ... independent scoring keeps it


def test_greedy_analysis_reports_both_scorings(trained):
    model, ds = trained
    out = analyse_greedy(model, _example(), ds, (0.0, 0.5), progress=False)
    assert out["layers"] == ["conv1", "conv2", "conv3"] and len(out["greedy"]) == 2
    assert out["same_choice"][0] == 1.0 and 0.0 <= out["same_choice"][1] <= 1.0
    sel = analyse_selection(model, _example(), ds, (0.5,), draws=2, seed=0, progress=False)
    assert sel["random"][0] == pytest.approx(sum(sel["random_draws"][0]) / 2)


def test_sorting_is_a_permutation_and_its_first_k_cut_is_the_importance_cut(trained):
    model, _ = trained
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ordered, _ = sort_channels(model, _example(), "fro")
    ordered.eval()
    with torch.no_grad():
        assert torch.allclose(ordered(x), model(x), atol=1e-5)             # unpruned: same outputs
        groups, ids = conv_groups(model, _example())
        s_groups, s_ids = conv_groups(ordered, _example())
        fro = score_groups(groups, "fro")
        for r in (0.25, 0.5, 0.75):
            by_importance = apply_plan(copy.deepcopy(model), make_plan(groups, choose_channels(
                groups, {i: fro[i] for i in ids}, r))).eval()
            first_k = apply_plan(copy.deepcopy(ordered), make_plan(s_groups, first_keep(s_groups, s_ids, r))).eval()
            assert torch.allclose(first_k(x), by_importance(x), atol=1e-5), r
        unsorted = apply_plan(copy.deepcopy(model), make_plan(groups, first_keep(groups, ids, 0.5)))
        assert unsorted.conv1.out_channels == 2 and torch.equal(unsorted.conv1.weight, model.conv1.weight[:2])


def test_norms_are_sorted_and_divided_by_the_largest(trained):
    model, _ = trained
    out = analyse_norms(model)["layers"]
    assert list(out) == ["conv1", "conv2", "conv3"]
    l1 = model.conv2.weight.detach().abs().sum((1, 2, 3)).sort(descending=True).values
    assert out["conv2"]["l1"] == pytest.approx(l1.tolist())
    assert out["conv2"]["normalised"] == pytest.approx((l1 / l1[0]).tolist()) and out["conv2"]["normalised"][0] == 1.0


def test_bad_configs_and_a_model_without_conv_layers_are_refused(trained, tmp_path):
    model, ds = trained
    for bad in (dict(ratios=(0.5, 1.0)), dict(ratios=(-0.1,)), dict(analyses=("norms", "bogus")),
                dict(analyses=()), dict(retrain_epochs=-1), dict(random_draws=0), dict(sort_criterion="random")):
        with pytest.raises(ConfigError):
            FilterAnalysisConfig(**bad).check()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ModelError, match="no convolution layer"):
        run_filter_analysis(mlp, ds, FilterAnalysisConfig(progress=False, verbose=False), tmp_path / "x")
    assert not (tmp_path / "x").exists()
