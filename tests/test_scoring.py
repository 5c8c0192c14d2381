"""deepshrink.scoring: one number per model and split, and per sample where a paired comparison needs it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.scoring import scorer_for
from deepshrink.train import evaluate


def test_labelled_scores_are_accuracy_and_its_per_image_terms(make_dataset):
    ds = make_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    score = scorer_for(ds)
    per = score.samples(model, ds.test)
    logits = model(ds.test.x).detach()
    assert per.shape == (len(ds.test),) and set(per.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(per, (logits.argmax(1) == ds.test.y).double())       # oracle: the model's own argmax
    assert per.mean().item() == pytest.approx(score(model, ds.test)) == pytest.approx(evaluate(model, ds.test))


def test_unlabelled_scores_have_no_per_sample_terms(make_dataset):
    from dataclasses import replace
    ds = make_dataset()
    text = replace(ds, labelled=False)
    ref = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    assert scorer_for(text, ref).samples is None
    with pytest.raises(ConfigError, match="reference"):
        scorer_for(text)
