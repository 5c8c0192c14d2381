"""finetune_settings: one rule book for every method's fine-tuning lr, weight decay, augmentation
and label smoothing, read from the model's recorded training; the user's choices win."""

from __future__ import annotations

import pytest

from deepshrink.errors import ConfigError
from deepshrink.io import ModelInfo
from deepshrink.pipelines.defaults import METHODS, Finetune, FinetuneSettings, finetune_settings

RECORDED = {"lr": 0.05, "weight_decay": 1e-4, "augment": False, "label_smoothing": 0.1}


@pytest.mark.parametrize("method,expected", [
    ("prune", FinetuneSettings(0.05, 1e-4, False, 0.0)),
    ("prune_channels", FinetuneSettings(0.05 / 10, 1e-4, False, 0.1)),
    ("qat", FinetuneSettings(0.002, 5e-4, False, 0.0)),
    ("kmeans", FinetuneSettings(1e-4, 0.0, False, 0.0)),     # the model's augmentation, like the others
    ("distill", FinetuneSettings(0.05, 1e-4, False, 0.1)),
])
def test_each_method_from_the_recorded_training(method, expected):
    assert finetune_settings(method, RECORDED) == expected
    info = ModelInfo(arch="lenet300", history=[{"op": "train", "config": RECORDED}])
    assert finetune_settings(method, info) == expected   # a ModelInfo reads its first train entry


@pytest.mark.parametrize("method,expected", [   # no recorded training: no augmentation (flips change digits)
    ("prune", FinetuneSettings(0.01, 5e-4, False, 0.0)),
    ("prune_channels", FinetuneSettings(0.01, 5e-4, False, 0.0)),
    ("qat", FinetuneSettings(0.002, 5e-4, False, 0.0)),
    ("kmeans", FinetuneSettings(1e-4, 0.0, False, 0.0)),
    ("distill", FinetuneSettings(0.05, 5e-4, False, 0.0)),
])
def test_each_method_without_a_record(method, expected):
    assert finetune_settings(method) == expected
    assert finetune_settings(method, ModelInfo(arch="lenet300")) == expected


@pytest.mark.parametrize("method", METHODS)
def test_the_users_choices_win(method):
    user = Finetune(lr=0.3, weight_decay=0.0, augment=True, label_smoothing=0.2)
    assert finetune_settings(method, RECORDED, user) == FinetuneSettings(0.3, 0.0, True, 0.2)
    assert finetune_settings(method, RECORDED, Finetune(lr=0.3)).weight_decay == \
        finetune_settings(method, RECORDED).weight_decay


def test_unknown_method():
    with pytest.raises(ConfigError, match="prune_channels"):
        finetune_settings("nope", RECORDED)


@pytest.mark.parametrize("method", METHODS)
def test_augmentation_only_when_the_recipe_asked(method):
    assert finetune_settings(method, {"lr": 0.05, "augment": True}).augment is True
    assert finetune_settings(method, {"lr": 0.05}).augment is False     # a record without the field
    assert finetune_settings(method, {}, Finetune(augment=True)).augment is True
