"""The scan's split: the last N training images (Split.tail), one slicing for the sensitivity
command, prune --auto and the Deep Compression pipeline."""

from __future__ import annotations

import pytest
import torch

from deepshrink.compress import _scan_split
from deepshrink.data import Split
from deepshrink.errors import ConfigError
from deepshrink.pipelines.sensitivity import ScanConfig, scan_split


def test_tail_is_the_last_n_samples():
    s = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    assert s.tail(3).y.tolist() == [7, 8, 9] and s.tail(3).x.flatten().tolist() == [7.0, 8.0, 9.0]
    assert len(s.tail(10)) == len(s.tail(99)) == 10 and len(s.tail(0)) == 0
    assert s.take(3).y.tolist() == [0, 1, 2]


def test_scan_splits_slice_alike(make_dataset):
    ds = make_dataset(n_train=100, n_test=20)
    split, label = scan_split(ds, "train-slice", 30)
    assert torch.equal(split.y, ds.train.y[-30:]) and "last 30 images of the training split" in label
    same, label = _scan_split(ds, 30)
    assert torch.equal(same.x, split.x) and label == "the last 30 training images"
    split, label = scan_split(ds, "train-slice", 500)    # more than there are: all of them
    assert len(split) == 100 and "last 100" in label
    split, label = scan_split(ds, "test", 30)
    assert split is ds.test and label == "test split (20 images)"
    assert _scan_split(ds, 0)[0] is ds.test and _scan_split(ds, 100)[0] is ds.test


@pytest.mark.parametrize("bad", [dict(eval_on="val"), dict(eval_size=0)])
def test_scan_config_check(bad):
    with pytest.raises(ConfigError):
        ScanConfig(**bad).check()
    ScanConfig(eval_on="test", eval_size=0).check()   # the size only matters for the training slice
