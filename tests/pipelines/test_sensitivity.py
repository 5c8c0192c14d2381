"""The scan's split: the validation split carved from the training split (never the test split),
one carving for the sensitivity command, prune --auto and the Deep Compression pipeline."""

from __future__ import annotations

import pytest
import torch

import deepshrink.scoring as scoring
from deepshrink.data import with_validation
from deepshrink.errors import ConfigError
from deepshrink.pipelines.sensitivity import ScanConfig, run_scan


def _spy_evaluate(monkeypatch, module) -> list:
    """Record the split of every ``evaluate`` call ``module`` makes."""
    seen = []
    real = module.evaluate

    def spy(model, split, *a, **k):
        seen.append(split)
        return real(model, split, *a, **k)

    monkeypatch.setattr(module, "evaluate", spy)
    return seen


@pytest.mark.parametrize("val_size,expected", [(None, 10), (30, 30)])
def test_the_scan_evaluates_on_the_validation_split_only(make_dataset, monkeypatch, tmp_path, val_size, expected):
    torch.manual_seed(0)
    ds = make_dataset(n_train=100, n_test=20)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    seen = _spy_evaluate(monkeypatch, scoring)       # every accuracy a scan measures goes through the scorer
    scan = run_scan(model, ds, ScanConfig(sparsities=(0.5,), val_size=val_size, progress=False, verbose=False),
                    tmp_path)
    val = with_validation(ds, val_size).val              # seeded: the same images every time
    assert seen and all(torch.equal(s.x, val.x) and torch.equal(s.y, val.y) for s in seen)
    assert all(s.x is not ds.test.x for s in seen)
    assert scan["split"] == "validation" and scan["val_images"] == expected == len(val)
    assert f"{expected} images held out of the training split" in scan["evaluated_on"]


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_scan_config_refuses_a_bad_val_size(bad):
    with pytest.raises(ConfigError, match="val_size"):
        ScanConfig(val_size=bad).check()
    ScanConfig(val_size=1).check()
    ScanConfig().check()                                  # None: 10% of the training split, at most 5,000
