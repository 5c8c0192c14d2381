"""The one number every choice is judged by: accuracy on labelled data, fidelity on unlabelled.

A sensitivity scan, an accuracy budget and its retries compare a compressed model with its
dense original on the validation split. With labels that number is top-1 accuracy. Text carries
no labels (``Dataset.labelled`` is False), so the number is the model's agreement with the dense
original on the same inputs (:mod:`deepshrink.fidelity`): the mean cosine of the outputs for a
bare encoder's embeddings, the top-1 agreement for logits. Both lie in [0, 1] with the dense
model at (or near) the top, so "percentage points below dense" means the same thing for both,
and every pipeline reads one :class:`Scorer` instead of asking whether the data has labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .data import Dataset, Split
from .errors import ConfigError
from .fidelity import fidelity, output_kind
from .train import evaluate, predict

__all__ = ["Scorer", "scorer_for"]


@dataclass(frozen=True)
class Scorer:
    """``fn(model, split)`` in [0, 1], higher is better; ``name`` says what it is in a sentence.
    ``samples(model, split)``, where given: the per-sample scores (N,) whose mean is ``fn``'s value,
    from which a paired comparison of two models gets its standard error."""

    name: str                                   # "accuracy", "mean cosine to the original", ...
    fn: Callable[[nn.Module, Split], float]
    samples: Callable[[nn.Module, Split], torch.Tensor] | None = None

    def __call__(self, model: nn.Module, split: Split) -> float:
        return self.fn(model, split)


def _correct(model: nn.Module, split: Split) -> torch.Tensor:
    """1.0 where the model's top-1 class is the label, else 0.0: (N,)."""
    return (predict(model, split.x).argmax(1) == split.y).to(torch.float64)


def scorer_for(data: Dataset, reference: nn.Module | None = None) -> Scorer:
    """Accuracy when ``data`` is labelled; else fidelity to ``reference`` (the dense original,
    which the caller keeps unchanged): mean cosine for embeddings, top-1 agreement for logits."""
    if data.labelled:
        return Scorer("accuracy", lambda m, split: evaluate(m, split), _correct)
    if reference is None:
        raise ConfigError("unlabelled data is scored against a reference model; pass the dense original")
    if output_kind(reference) == "embedding":
        return Scorer("mean cosine to the original", lambda m, split: fidelity(m, reference, split.x).cosine_mean)
    return Scorer("top-1 agreement with the original",
                  lambda m, split: fidelity(m, reference, split.x, kind="logits").agreement)
