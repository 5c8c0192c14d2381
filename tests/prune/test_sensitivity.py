"""deepshrink.prune.sensitivity: the per-layer scan, automatic sparsities, the curves as PNG."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from deepshrink.data import Split
from deepshrink.errors import ConfigError
from deepshrink.prune import (DEFAULT_GRID, choose_sparsities, get_masks, layer_sparsities, plot_sensitivity,
                              sensitivity_scan)
from deepshrink.train import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 10), nn.ReLU(), nn.Linear(10, 3))


def fixed_split(seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(64, 1, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- scan

def test_scan_shape_and_restore():
    model = tiny()
    split = fixed_split()
    before = snapshot(model)
    grid = [0.9, 0.5, 0.7]
    scan = sensitivity_scan(model, lambda m: evaluate(m, split), grid, progress=False)
    assert set(scan) >= {"dense", "sparsities", "layers", "rule"}
    assert scan["sparsities"] == [0.5, 0.7, 0.9]
    assert scan["rule"] == "magnitude"
    assert scan["dense"] == evaluate(model, split)
    assert list(scan["layers"]) == ["1.weight", "3.weight"]  # the output layer "5" is no default target
    for name, n in (("1.weight", 16 * 24), ("3.weight", 24 * 10)):
        entry = scan["layers"][name]
        assert entry["params"] == n
        assert len(entry["accuracy"]) == 3
        assert all(0.0 <= a <= 1.0 for a in entry["accuracy"])
    json.dumps(scan)  # a plain dict
    after = model.state_dict()
    assert set(after) == set(before)  # no mask buffers left behind
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert get_masks(model) == {}


def test_scan_prunes_one_layer_at_a_time():
    model = tiny()
    dense = layer_sparsities(model)
    calls = []

    def fake_eval(m):  # a deterministic function of the weights' sparsity
        ls = layer_sparsities(m)
        calls.append(ls)
        return 1.0 - sum(ls.values()) / 10

    grid = [0.25, 0.5, 0.75]
    scan = sensitivity_scan(model, fake_eval, grid, progress=False)
    assert calls[0] == dense and scan["dense"] == 1.0
    it = iter(calls[1:])
    for name in scan["layers"]:
        n = scan["layers"][name]["params"]
        for s, acc in zip(grid, scan["layers"][name]["accuracy"]):
            ls = next(it)
            assert ls[name] == pytest.approx(round(n * s) / n)
            assert all(ls[o] == dense[o] for o in ls if o != name)
            assert acc == pytest.approx(1.0 - ls[name] / 10)
    assert next(it, None) is None


def test_scan_restores_a_masked_model():
    model = tiny()
    from deepshrink.prune import prune_
    prune_(model, 0.3)
    before = snapshot(model)
    sensitivity_scan(model, lambda m: 0.5, [0.4, 0.95], layers=["3.weight"], rule="random", progress=False)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("grid", [[], [-0.1, 0.5], [0.5, 1.5]])
def test_scan_bad_grid(grid):
    with pytest.raises(ConfigError):
        sensitivity_scan(tiny(), lambda m: 1.0, grid, progress=False)


def test_scan_unknown_layer_named():
    with pytest.raises(ConfigError, match="nope.weight"):
        sensitivity_scan(tiny(), lambda m: 1.0, [0.5], layers=["nope.weight"], progress=False)


# ----------------------------------------------------------------------------- choose

GRID = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def synthetic_scan() -> dict:
    """A large insensitive layer and a small sensitive one (plus a middle one)."""
    return {
        "dense": 0.90,
        "sparsities": GRID,
        "layers": {
            "small": {"params": 500, "accuracy": [0.85, 0.80, 0.70, 0.55, 0.40, 0.20]},
            "big": {"params": 20000, "accuracy": [0.90, 0.90, 0.899, 0.898, 0.895, 0.88]},
            "mid": {"params": 3000, "accuracy": [0.899, 0.897, 0.893, 0.885, 0.87, 0.84]},
        },
    }


def total_sparsity(scan, chosen) -> float:
    n = {k: v["params"] for k, v in scan["layers"].items()}
    return sum(chosen[k] * n[k] for k in n) / sum(n.values())


@pytest.mark.parametrize("target", [0.0, 0.1, 0.3, 0.5, 0.62, 0.75, 0.8, 0.85, 0.9])
def test_choose_hits_target_exactly(target):
    scan = synthetic_scan()
    chosen = choose_sparsities(scan, target_sparsity=target)
    assert set(chosen) == set(scan["layers"])
    assert all(0.0 <= v <= 0.9 + 1e-12 for v in chosen.values())
    assert abs(total_sparsity(scan, chosen) - target) <= 1e-9


def test_choose_prunes_insensitive_large_layer_harder():
    scan = synthetic_scan()
    for target in (0.5, 0.7, 0.85):
        chosen = choose_sparsities(scan, target_sparsity=target)
        assert chosen["big"] > chosen["small"]
        assert chosen["big"] >= chosen["mid"]


def individual_drops(scan, chosen) -> float:
    total = 0.0
    for name, s in chosen.items():
        if s > 0:
            i = scan["sparsities"].index(s)
            total += scan["dense"] - scan["layers"][name]["accuracy"][i]
    return total


@pytest.mark.parametrize("budget", [0.0, 0.001, 0.005, 0.01, 0.03, 0.1, 0.5, 1.0])
def test_choose_accuracy_budget(budget):
    scan = synthetic_scan()
    chosen = choose_sparsities(scan, max_drop=budget)
    assert all(v == 0.0 or v in GRID for v in chosen.values())
    assert individual_drops(scan, chosen) <= budget + 1e-12
    if budget >= 0.01:  # the big layer is nearly free: it gets pruned
        assert chosen["big"] >= 0.8


def test_choose_budget_random_scans():
    rng = random.Random(0)
    for _ in range(50):
        dense = rng.uniform(0.5, 1.0)
        scan = {"dense": dense, "sparsities": GRID, "layers": {}}
        for i in range(rng.randint(1, 5)):
            accs = [dense - rng.uniform(-0.01, 0.2) * (j + 1) / len(GRID) for j in range(len(GRID))]  # not monotone
            scan["layers"][f"l{i}"] = {"params": rng.randint(1, 5000), "accuracy": accs}
        budget = rng.uniform(0, 0.3)
        chosen = choose_sparsities(scan, max_drop=budget)
        assert individual_drops(scan, chosen) <= budget + 1e-12
        target = rng.uniform(0, 0.9)
        assert abs(total_sparsity(scan, choose_sparsities(scan, target_sparsity=target)) - target) <= 1e-9


def test_choose_on_a_real_scan():
    model = tiny()
    split = fixed_split()
    scan = sensitivity_scan(model, lambda m: evaluate(m, split), DEFAULT_GRID, progress=False)
    chosen = choose_sparsities(json.loads(json.dumps(scan)), target_sparsity=0.6)
    assert abs(total_sparsity(scan, chosen) - 0.6) <= 1e-9


def test_choose_errors():
    scan = synthetic_scan()
    with pytest.raises(ConfigError):
        choose_sparsities(scan, target_sparsity=0.95)  # beyond the grid: unreachable
    with pytest.raises(ConfigError):
        choose_sparsities(scan)
    with pytest.raises(ConfigError):
        choose_sparsities(scan, target_sparsity=1.5)
    with pytest.raises(ConfigError):
        choose_sparsities(scan, target_sparsity=-0.1)


def test_choose_budget_stops_short_of_target():
    scan = synthetic_scan()
    chosen = choose_sparsities(scan, target_sparsity=0.9, max_drop=0.01)
    assert individual_drops(scan, chosen) <= 0.01
    assert total_sparsity(scan, chosen) < 0.9


# ----------------------------------------------------------------------------- plot

def test_plot_sensitivity_png(tmp_path):
    scan = synthetic_scan()
    path = tmp_path / "sub" / "curves.png"
    path.parent.mkdir()
    plot_sensitivity(scan, path, max_drop=0.005)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left
    plot_sensitivity({**scan, "layers": {"big": scan["layers"]["big"]}}, tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:8] == PNG_MAGIC


def test_scan_follows_include_and_exclude():
    model = tiny()
    split = fixed_split()
    ev = lambda m: evaluate(m, split)  # noqa: E731
    scan = sensitivity_scan(model, ev, [0.5], progress=False, include="5", exclude="1.weight")
    assert list(scan["layers"]) == ["3.weight", "5.weight"]
    assert list(sensitivity_scan(model, ev, [0.5], progress=False, layers=["5.weight"])["layers"]) == ["5.weight"]
    with pytest.raises(ConfigError, match="exclude glob 'fc9'"):
        sensitivity_scan(model, ev, [0.5], progress=False, exclude=["fc9"])
    with pytest.raises(ConfigError, match="not both"):
        sensitivity_scan(model, ev, [0.5], progress=False, layers=["3.weight"], include="5")
    with pytest.raises(ConfigError, match="no weights to scan"):
        sensitivity_scan(model, ev, [0.5], progress=False, exclude="*")
    assert get_masks(model) == {}
