"""deepshrink.holdout: was a model trained on the validation images a command chooses on? Pure
checks of the verdict on records built here, and the prefix property the verdict relies on."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepshrink.data import VAL_SEED, Dataset, Split, with_validation
from deepshrink.errors import ConfigError
from deepshrink.holdout import (HELD_OUT, OTHER_DATA, TRAINED_ON, UNKNOWN, held_out_record, overlap_warning,
                                training_overlap)

N = 256


def _indexed(n: int = N, name: str = "npz:tiny.npz") -> Dataset:
    """Image i is the single value i: which images land in a split can be read off ``x``."""
    split = Split(torch.arange(n, dtype=torch.float32).view(n, 1), torch.zeros(n, dtype=torch.int64))
    return Dataset(name, split, split.take(8), [0.0], [1.0], 2)


def _history(held: object = "absent") -> list[dict]:
    entry = {"op": "train", "config": {"epochs": 1}}
    if held != "absent":
        entry["held_out"] = held
    return [entry, {"op": "prune", "config": {}}]


SPEC = "npz:tiny.npz"


def test_held_out_record_counts_the_images_before_the_carve():
    ds = _indexed()
    assert held_out_record(with_validation(ds)) == {"val_size": 25, "seed": VAL_SEED, "of_train": N}
    assert held_out_record(with_validation(ds, 40)) == {"val_size": 40, "seed": VAL_SEED, "of_train": N}
    assert held_out_record(ds) == {"val_size": 0, "seed": VAL_SEED, "of_train": N}


def test_a_smaller_split_lies_inside_a_larger_one():
    """The oracle for the ``j <= k`` rule: one seeded permutation, so a smaller carve is a prefix."""
    ds = _indexed()
    small = set(with_validation(ds, 10).val.x.flatten().tolist())
    large = set(with_validation(ds, 25).val.x.flatten().tolist())
    assert len(small) == 10 and small < large
    train = set(with_validation(ds, 25).train.x.flatten().tolist())
    assert not train & large and len(train | large) == N


@pytest.mark.parametrize("held,val_size,expected", [
    ({"val_size": 25, "seed": VAL_SEED, "of_train": N}, None, HELD_OUT),     # the same carve
    ({"val_size": 25, "seed": VAL_SEED, "of_train": N}, 10, HELD_OUT),       # a prefix of it
    ({"val_size": 25, "seed": VAL_SEED, "of_train": N}, 40, TRAINED_ON),     # 15 images it saw
    ({"val_size": 25, "seed": VAL_SEED + 1, "of_train": N}, None, TRAINED_ON),
    ({"val_size": 25, "seed": VAL_SEED, "of_train": N + 1}, None, TRAINED_ON),
    ({"val_size": 0, "seed": VAL_SEED, "of_train": N}, None, TRAINED_ON),    # train --val-size 0
    ("absent", None, TRAINED_ON),                                             # trained before hold-outs
    ({"val_size": "25", "seed": 0, "of_train": N}, None, TRAINED_ON),        # malformed: not held out
    ({"val_size": True, "seed": 0, "of_train": N}, None, TRAINED_ON),
    ({"val_size": -25, "seed": 0, "of_train": N}, None, TRAINED_ON),
    ([25, 0, N], None, TRAINED_ON),
])
def test_training_overlap(held, val_size, expected):
    ds = with_validation(_indexed(), val_size)
    assert training_overlap(_history(held), SPEC, ds) == expected


def test_no_training_record_is_unknown_and_another_data_set_is_not_this_question():
    ds = with_validation(_indexed())
    held = {"val_size": 25, "seed": VAL_SEED, "of_train": N}
    assert training_overlap([], SPEC, ds) == UNKNOWN
    assert training_overlap([{"op": "prune"}], SPEC, ds) == UNKNOWN
    assert training_overlap("not a list", SPEC, ds) == UNKNOWN
    assert training_overlap(_history(held), None, ds) == UNKNOWN
    assert training_overlap(_history(held), "fashion-mnist", ds) == OTHER_DATA
    with pytest.raises(ConfigError, match="no validation split"):
        training_overlap(_history(held), SPEC, _indexed())


def test_overlap_warning_lines():
    ds = with_validation(_indexed())
    held = {"val_size": 25, "seed": VAL_SEED, "of_train": N}
    assert overlap_warning("m.safetensors", _history(held), SPEC, ds) is None
    assert overlap_warning("m.safetensors", _history(held), "fashion-mnist", ds) is None
    line = overlap_warning("m.safetensors", _history(), SPEC, ds)
    assert line.startswith("deepshrink: warning: m.safetensors: trained on the 25 validation images")
    assert "inflated" in line and "deepshrink train" in line and "\n" not in line
    other = overlap_warning("m.safetensors", _history({**held, "val_size": 5}), SPEC, ds)
    assert "another split (5 of 256 images, seed 0)" in other
    unknown = overlap_warning("m.safetensors", [], SPEC, ds)
    assert "unknown" in unknown and "25 validation images" in unknown
    assert overlap_warning("m.safetensors", [], SPEC, replace(ds, labelled=False)) is None   # nothing chosen by accuracy
